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

# The name input goes into paths and container names: hold it to what
# bootc-box takes as a VM name (vms.VM_NAME), before anything uses it.
check_name() {
    if [[ ! $INPUT_NAME =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$ ]]; then
        echo "::error title=bootc-box::the input 'name' must be letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63, not '$(escape_message "$INPUT_NAME")'"
        exit 1
    fi
}
