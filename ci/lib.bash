# Shell helpers for the scripts under ci/: source it, don't run it.
# shellcheck shell=bash

# retry ATTEMPTS COMMAND [ARG...]: run COMMAND until it succeeds, at most
# ATTEMPTS times, waiting 15 s, then 30 s, ... in between ($RETRY_DELAY
# sets the first wait). For fetches that
# can fail once and then work (a Debian mirror caught mid-sync, a dropped
# connection); a failure that lasts still fails, with the command's own
# messages and exit status.
retry() {
    local attempts=$1 delay=${RETRY_DELAY:-15} try status
    shift
    for ((try = 1; ; try++)); do
        status=0
        "$@" || status=$?
        ((status == 0)) && return 0
        if ((try >= attempts)); then
            echo "retry: $* failed $try times (last exit status $status); giving up" >&2
            return "$status"
        fi
        echo "retry: $* failed (exit status $status); again in $delay s (try $((try + 1)) of $attempts)" >&2
        sleep "$delay"
        delay=$((delay * 2))
    done
}

# apt-get with retries of single fetches; `update` also fails on any fetch
# error (instead of a warning and stale lists) so that retry sees it.
apt_get() {
    local args=(-o Acquire::Retries=5)
    [[ $1 == update ]] && args+=(--error-on=any)
    DEBIAN_FRONTEND=noninteractive apt-get "${args[@]}" "$@"
}

# step TITLE COMMAND [ARG...]: run COMMAND for a person watching: its output
# goes to the file $STEP_LOG, and one line says TITLE and how long it took.
# When COMMAND fails, the log's last lines follow, and the script exits with
# COMMAND's status.
step() {
    local title=$1 started=$SECONDS status=0
    shift
    printf '%-34s' "$title"
    printf '\n=== %s: %s\n' "$title" "$*" >>"$STEP_LOG"
    "$@" >>"$STEP_LOG" 2>&1 </dev/null || status=$?
    if ((status)); then
        printf 'failed after %d s (exit status %d)\n' $((SECONDS - started)) "$status"
        echo "The last lines of $STEP_LOG:"
        tail -n 40 "$STEP_LOG" | sed 's/^/    /'
        exit "$status"
    fi
    printf '%4d s\n' $((SECONDS - started))
}
