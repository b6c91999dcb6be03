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

# warm_mode INPUT SOURCE CACHE: bootc-box's --warm for an image from
# SOURCE (registry, or local: built in this workflow) with CACHE (the cache
# mode). "auto" saves a pulled image's state at once when the cache keeps
# it, for the later jobs that restore it from there.
warm_mode() {
    case $1 in
    always | never) echo "$1" ;;
    auto) if [[ $2 == registry && $3 == true ]]; then echo always; else echo auto; fi ;;
    *)
        echo "::error title=bootc-box::the input 'warm' must be auto, always or never, not '$(escape_message "$1")'" >&2
        return 1
        ;;
    esac
}

# cache_mode INPUT PRIVATE: what of /cache actions/cache keeps. "true": all
# of it; "images": all but the saved VM states, whose guest memory and
# bootstrap SSH keys anyone who can read the repository's caches could read
# (in a public repository, pull requests from forks can); "false": nothing.
# "auto" is "true" in a private repository, "images" in any other.
cache_mode() {
    case $1 in
    true | images | false) echo "$1" ;;
    auto) if [[ $2 == true ]]; then echo true; else echo images; fi ;;
    *)
        echo "::error title=bootc-box::the input 'cache' must be auto, true, images or false, not '$(escape_message "$1")'" >&2
        return 1
        ;;
    esac
}
