"""Reaching the guest over SSH with a per-run key, checking its host key."""

import dataclasses
import enum
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.hostkeys import KEY_REFUSED, find_learnt_key, learning_options, pinned_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    key: Path
    # The VM's host key ("ssh-ed25519 BASE64"): the only one ssh accepts.
    host_key: str | None = None
    # Without one: a first login learns it into this file (hostkeys.py).
    known_hosts: Path | None = None
    # The socket of a connection the run made already (ssh's ControlMaster):
    # logins go through it with no handshake of their own, which costs
    # about a second under TCG; without it, ssh connects as usual.
    control: Path | None = None

    def host_key_options(self) -> tuple[tuple[str, str], ...]:
        if self.host_key:
            return pinned_options(self.host_key)
        if self.known_hosts:
            return learning_options(self.known_hosts)
        # A VM recorded by a bootc-box that did not know its key yet.
        return (("StrictHostKeyChecking", "no"), ("UserKnownHostsFile", "/dev/null"))


def generate_key(directory: Path) -> Path:
    """A fresh ed25519 key pair; ssh-keygen creates the private half 0600."""
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bootc-box", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return key


def public_key(key: Path) -> bytes:
    """The public half: KEY.pub beside it, else derived from the private key."""
    pub = key.with_name(key.name + ".pub")
    if pub.is_file():
        return pub.read_bytes()
    result = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)],
        check=False,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise BootcBoxError(
            f"cannot read the public key of {key}", f"put it beside the key as {pub.name}"
        )
    return result.stdout


def check_private_key(key: Path) -> Path:
    """A caller's key (--ssh-key) that ssh will accept, without asking for a
    passphrase, and that matches the public half the guest will be given.
    Each of these would otherwise show only as a login that never works,
    after a whole boot and the SSH timeout."""
    if not key.is_file():
        raise BootcBoxError(f"--ssh-key {key} does not exist", "pass the private key's path")
    if key.stat().st_mode & 0o077:
        raise BootcBoxError(f"--ssh-key {key} is readable by others", f"chmod 600 {key}")
    # -P "": try the empty passphrase instead of prompting for one.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-P", "", "-f", str(key)],
        check=False, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if derived.returncode != 0:
        if b"passphrase" in derived.stderr:
            raise BootcBoxError(
                f"--ssh-key {key} is protected by a passphrase, and bootc-box logs in unattended",
                "make a key without one for VMs: ssh-keygen -t ed25519 -N '' -f FILE",
            )
        raise BootcBoxError(
            f"--ssh-key {key} is not a private key ssh can read", "pass the private key's path"
        )
    pub = key.with_name(key.name + ".pub")
    if pub.is_file() and pub.read_bytes().split()[:2] != derived.stdout.split()[:2]:
        raise BootcBoxError(
            f"{pub} is not the public half of --ssh-key {key}",
            f"remove {pub.name}, or put the matching one there",
        )
    return key


# How bootc-box logs in to a VM, in ssh_config(5) words: on the command
# line of each login, and in `bootc-box ssh-config` for other tools.
SSH_OPTIONS = (
    ("IdentitiesOnly", "yes"),
    ("BatchMode", "yes"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("LogLevel", "ERROR"),
)


# A master connection outlives its first session this long once unused,
# should the run that made it end without closing it.
MASTER_PERSIST = 60


def ssh_argv(
    target: SshTarget,
    command: Sequence[str] = (),
    *,
    tty: bool = False,
    connect_timeout: int = 5,
    master: bool = False,
) -> list[str]:
    """ssh's command line; with `master` (and a `target.control`), this login
    becomes the connection that later ones go through."""
    argv = ["ssh", "-i", str(target.key), "-p", str(target.port)]
    options = (*SSH_OPTIONS, *target.host_key_options(), ("ConnectTimeout", str(connect_timeout)))
    if target.control:
        options += (("ControlPath", str(target.control)),)
        if master:
            options += (("ControlMaster", "yes"), ("ControlPersist", str(MASTER_PERSIST)))
        else:
            options += (("ControlMaster", "no"),)
    for key, value in options:
        argv += ["-o", f"{key}={value}"]
    argv += ["-t" if tty else "-T", f"{target.user}@{target.host}"]
    if command:
        argv += ["--", remote_command(command)]
    return argv


def remote_command(command: Sequence[str]) -> str:
    """The one string ssh hands the guest's shell, for `run` and `ssh` alike.
    One argument is a shell command line, as OpenSSH and bcvk take it
    (`ssh web -- 'echo hi > /tmp/f'`); several are a program and its
    arguments, quoted so that each arrives as given, as podman exec takes
    them (`ssh web -- touch 'a b'`)."""
    if len(command) == 1:
        return command[0]
    return shlex.join(command)


def ssh_config(alias: str, target: SshTarget) -> str:
    """An ssh_config(5) stanza that logs in to `target` as `ssh alias` does
    for ssh, scp, rsync, Ansible or tmt, with no flags of their own."""
    lines = [
        f"Host {alias}",
        f"    HostName {target.host}",
        f"    Port {target.port}",
        f"    User {target.user}",
        f"    IdentityFile {target.key}",
        *(f"    {key} {value}" for key, value in (*SSH_OPTIONS, *target.host_key_options())),
    ]
    return "\n".join(lines) + "\n"


class Answer(enum.Enum):
    """What one login attempt found."""

    UP = enum.auto()
    NOT_YET = enum.auto()
    # The guest showed another host key than the one pinned.
    KEY_REFUSED = enum.auto()


def ssh_ready(target: SshTarget) -> Answer:
    """One attempt at a full login; a forwarded port accepts connections long
    before sshd answers, so only a command that ran proves the guest is up."""
    try:
        result = subprocess.run(
            ssh_argv(target, ["true"]),
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return Answer.NOT_YET
    if result.returncode == 0:
        return Answer.UP
    if KEY_REFUSED.encode() in result.stderr:
        return Answer.KEY_REFUSED
    return Answer.NOT_YET


def server_speaks(port: int, timeout: float) -> bool:
    """Whether a server on 127.0.0.1:`port` sends anything within `timeout`:
    an SSH server speaks first (RFC 4253, 4.2), so a login may now work.
    The forwarded port accepts connections before the guest has its address,
    and a login that meets one waits its whole ConnectTimeout for a banner
    that never comes. What the guest sent is not looked at, only that it
    sent something."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            return conn.recv(1) != b""
    except OSError:  # refused, reset, timed out
        return False


class FirstLogin:
    """Logs in until the guest answers, checking the host key it was given.
    A guest that shows another one (an image whose systemd ignores the
    tmpfiles.extra credential: older than 254) has its own key learnt, once,
    with a warning, and pinned from there on (`target`)."""

    def __init__(self, target: SshTarget, known_hosts: Path) -> None:
        self.target, self.known_hosts = target, known_hosts

    def __call__(self) -> bool:
        answer = ssh_ready(self.target)
        if answer is Answer.KEY_REFUSED and self.target.host_key:
            log.warning(
                "the guest shows another SSH host key than bootc-box gave it (its systemd "
                "ignores the tmpfiles.extra credential: older than 254?); trusting the key "
                "it shows at this first login"
            )
            self.known_hosts.unlink(missing_ok=True)
            self.target = dataclasses.replace(
                self.target, host_key=None, known_hosts=self.known_hosts
            )
            answer = ssh_ready(self.target)
        if answer is not Answer.UP:
            return False
        if self.target.host_key is None:
            learnt = find_learnt_key(self.known_hosts)
            if learnt is None:
                raise BootcBoxError(f"ssh logged in but filed no host key in {self.known_hosts}")
            self.target = dataclasses.replace(self.target, host_key=learnt, known_hosts=None)
        return True


def stop_master(control: Path) -> None:
    """End the master connection at `control`, if there is one; it ends by
    itself MASTER_PERSIST seconds after its last use otherwise."""
    try:
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={control}", "-O", "exit", "vm"],
            check=False, capture_output=True, stdin=subprocess.DEVNULL, timeout=15,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not close the SSH connection at %s: %s", control, e)


# OpenSSH makes a master's socket under a name this much longer, then
# renames it into place; a socket's path holds at most SOCKET_PATH_MAX
# bytes (sun_path less its final NUL).
MASTER_SOCKET_SUFFIX = 17
SOCKET_PATH_MAX = 107


@contextmanager
def master_socket() -> Iterator[Path | None]:
    """A path for a master connection's socket, short enough whatever the
    VM's name, in a private directory; the master is closed and the
    directory removed afterwards. None where even that path is too long."""
    directory = Path(tempfile.mkdtemp(prefix="bootc-box-ssh-"))
    try:
        control = directory / "c"
        if len(os.fsencode(control)) + MASTER_SOCKET_SUFFIX > SOCKET_PATH_MAX:
            yield None
            return
        try:
            yield control
        finally:
            stop_master(control)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def connect(target: SshTarget, command: Sequence[str], *, tty: bool) -> int:
    """Run `command` (or a login shell) in the guest with our stdio; its status."""
    return subprocess.run(ssh_argv(target, command, tty=tty), check=False).returncode
