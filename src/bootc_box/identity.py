"""Making a restored VM its own machine before anyone uses it.

Every VM restored from one saved state starts as the same machine: the same
SSH host keys, the same authorized key (the snapshot's bootstrap key), and
the clock of the moment it was saved. Logged in with the bootstrap key, we
give it the run's key in place of that one, new host keys made on the host
(fast there, slow under TCG), and the host's time."""

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.hostkeys import checked_public_key
from bootc_box.ssh import SshTarget, ssh_argv

# Run by root in the guest; $1 is the run's public key, stdin a tar of the
# new host keys.
GUEST_SCRIPT = r"""set -eu
umask 077
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
tar -x -C /etc/ssh
# The sshd listener holds the host keys it started with. Where sshd listens
# itself, SIGHUP starts it again: wait here until it listens anew (its
# socket's inode changes); a login from the host to find that out would cost
# most of a second under TCG. Where systemd holds port 22 (socket
# activation), restart the service: connections queue on systemd's socket.
listener() {
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r _ addr _ state _ _ _ _ _ inode _; do
        case "$addr $state" in *:0016\ 0A) echo "$inode"; break ;; esac
    done
}
alive() { [ -n "$1" ] && [ "$1" != 0 ] && kill -0 "$1" 2>/dev/null; }
before=$(listener)
if [ -n "$before" ] && ls -l /proc/1/fd 2>/dev/null | grep -q "socket:\[$before\]"; then
    systemctl try-restart ssh.service sshd.service 2>/dev/null || true
else
    # sshd's own pid file first: systemctl costs ~0.15 s a call under TCG.
    pid=$(cat /run/sshd.pid 2>/dev/null || true)
    for unit in ssh.service sshd.service; do
        alive "$pid" && break
        pid=$(systemctl show --property=MainPID --value "$unit" 2>/dev/null || true)
    done
    if alive "$pid"; then
        kill -HUP "$pid"
        tries=0
        while now=$(listener); [ -z "$now" ] || [ "$now" = "$before" ]; do
            tries=$((tries + 1))
            [ "$tries" -lt 200 ] || { echo "sshd did not listen again after SIGHUP" >&2; exit 3; }
            sleep 0.05
        done
    fi
fi
# The run's key replaces the bootstrap key last: until here, a retry with
# the bootstrap key can still log in.
mkdir -p /root/.ssh
printf '%s\n' "$1" > /root/.ssh/authorized_keys.new
mv -f /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
# The guest's clock stood still while its state lay on disk; its RTC did not.
date -u -s "@$(cat /sys/class/rtc/rtc0/since_epoch)" >/dev/null
"""
SSH_FAILED = 255


@dataclass(frozen=True)
class HostKeys:
    """New SSH host keys for a guest: a tar of every default type, owned by
    root, and the public ed25519 key, which ssh then pins."""

    tar: bytes
    ed25519: str


def new_host_keys() -> HostKeys:
    with tempfile.TemporaryDirectory(prefix="bootc-box-hostkeys-") as tmp:
        keys = Path(tmp) / "etc/ssh"
        keys.mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-A", "-f", tmp], check=True, capture_output=True)
        tar = subprocess.run(
            ["tar", "-c", "--owner=0", "--group=0", "-C", str(keys),
             *sorted(p.name for p in keys.iterdir())],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        return HostKeys(tar, checked_public_key((keys / "ssh_host_ed25519_key.pub").read_text()))


def give_own_identity(bootstrap: SshTarget, public_key: bytes, host_keys: bytes) -> bool:
    """Log in with the bootstrap key and make the guest this run's machine;
    from then on only the run's key logs in (and what goes through this
    login's connection, with `bootstrap.control`). False when SSH did not
    get through (the guest is not up yet); an error when the guest refused."""
    argv = ssh_argv(
        bootstrap, ["sh", "-c", GUEST_SCRIPT, "sh", public_key.decode().strip()], master=True
    )
    try:
        result = subprocess.run(argv, input=host_keys, capture_output=True, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    if result.returncode == SSH_FAILED:
        return False
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"status {result.returncode}"
        raise BootcBoxError(f"could not give the VM its own keys and time: {reason}")
    return True
