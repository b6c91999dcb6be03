# shellcheck shell=bash
# Shared by the action's steps (action.yml). Each step runs as the runner
# user; podman runs as root (sudo), so that the box can share root's image
# store, where `podman build` in an earlier step put the image.

SUDO=()
if [[ $(id -u) != 0 ]]; then
    SUDO=(sudo --preserve-env=HOME)
fi

podman_() {
    "${SUDO[@]}" podman "$@"
}

# output NAME VALUE: a step output (values here never hold a newline).
output() {
    printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
}

# An annotation's message: GitHub's escapes for %, CR and LF.
escape_message() {
    local text=$1
    text=${text//'%'/'%25'}
    text=${text//$'\r'/'%0D'}
    text=${text//$'\n'/'%0A'}
    printf '%s' "$text"
}

container_name() {
    printf 'bootc-box-%s' "$INPUT_NAME"
}
