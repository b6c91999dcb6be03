"""Running the command in a guest that has no sshd: bootc-box hands the guest
a unit of its own as a systemd credential (`systemd.extra-unit.*`, systemd
>= 256) and pulls it in with `systemd.wants=`; the unit talks to the host
over three virtio-serial ports (FIELD-NOTES, "A command without sshd").

The guest says `ready` on the control port once it is up, then waits for
one line: the host's time and the command. So a cold boot can be saved at
`ready` and the saved state serve every later run of the image, whatever its
command. The command's stdout and stderr have a port each; its exit status
comes back on the control port, and the guest powers off.

An image with sshd gets the unit too when its state may be saved (the
agent): the state is saved with the unit waiting, and a restored run whose
command needs no login (no terminal, no input, no VM that stays up) runs it
over the ports, without the SSH login that costs most of a warm run under
TCG. Other runs restored from that state log in over SSH as before."""

import base64
import hashlib
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bootc_box.credentials import write_credential
from bootc_box.errors import BootcBoxError
from bootc_box.kernel import resolve_in_root
from bootc_box.machine import Machine
from bootc_box.processes import last_line
from bootc_box.run_spec import Transport
from bootc_box.ssh import remote_command

log = logging.getLogger(__name__)

UNIT = "bootc-box-exec.service"
SCRIPT = "bootc-box.exec"
KARG = f"systemd.wants={UNIT}"
CONTROL, STDOUT, STDERR = "org.bootc-box.control", "org.bootc-box.stdout", "org.bootc-box.stderr"
PORTS = (CONTROL, STDOUT, STDERR)

# After the boot's target: the command runs in a system that is up, as it
# would over SSH. Its own output goes to the console, where a failure of
# the unit itself shows.
GUEST_UNIT = f"""[Unit]
Description=bootc-box: the run's command, over virtio-serial
After=default.target

[Service]
Type=exec
ImportCredential={SCRIPT}
# %d: the unit's credentials directory.
ExecStart=/bin/sh %d/{SCRIPT}
# What an SSH login would have set.
Environment=HOME=/root USER=root LOGNAME=root SHELL=/bin/sh
StandardOutput=journal+console
StandardError=journal+console
"""

# The command runs as root from /root with no stdin, in root's login shell
# with -c, as sshd runs it (a warm run of an image with sshd goes here, its
# cold run over SSH: both see the same shell); the shell is read from
# /etc/passwd with sh's builtins, as every program run costs a restored
# guest the translation of its code under TCG. The host sends the command
# base64-encoded, so one line carries any command. The clock comes to the
# millisecond; a date that takes no fraction (busybox) gets the second. An
# image without sshd may give root no login shell: sh runs the command then.
GUEST_SCRIPT = f"""set -u
ports=/dev/virtio-ports
exec 3<>"$ports/{CONTROL}"
echo ready >&3
read -r now token command <&3 || exit 1
date -s "@$now" >/dev/null 2>&1 || date -s "@${{now%.*}}" >/dev/null 2>&1 || :
echo started >&3
command=$(printf '%s' "$command" | base64 -d)
shell=/bin/sh
while IFS=: read -r name _ _ _ _ _ login; do
    [ "$name" = root ] && {{ shell=$login; break; }}
done </etc/passwd
case $shell in */nologin | */false) shell=/bin/sh ;; esac
[ -x "$shell" ] || shell=/bin/sh
cd /root
"$shell" -c "$command" </dev/null >"$ports/{STDOUT}" 2>"$ports/{STDERR}"
status=$?
# After the command's last byte on each port: the host stops reading there.
printf '%s' "$token" >"$ports/{STDOUT}"
printf '%s' "$token" >"$ports/{STDERR}"
echo "exit $status" >&3
systemctl --no-block poweroff
"""

SSHD_BINARIES = ("usr/sbin/sshd", "usr/bin/sshd", "sbin/sshd")
# Where distributions keep systemd's shared library, named for its version.
SYSTEMD_LIB_DIRS = (
    "usr/lib/systemd",
    "usr/lib64/systemd",
    "usr/lib/x86_64-linux-gnu/systemd",
    "usr/lib/aarch64-linux-gnu/systemd",
)
# systemd.extra-unit.* credentials: the first systemd that takes the unit.
AGENT_SYSTEMD = 256
# How long a booted guest's unit may take to say it is ready once SSH
# answered: both come with the boot's target, give or take a unit.
AGENT_WAIT = 30.0


def image_has_sshd(root: Path) -> bool:
    """Whether the image at `root` ships an sshd program (inside the image:
    a link is followed as the image sees it)."""
    return any(resolve_in_root(root, root / path).is_file() for path in SSHD_BINARIES)


def find_systemd_version(root: Path) -> int | None:
    """The version of the image's systemd, from the name of its shared
    library (libsystemd-shared-257.so, or -257.13-1.fc42.so); None when no
    such library is where distributions keep it. Names only: nothing the
    image holds is read."""
    versions = []
    for place in SYSTEMD_LIB_DIRS:
        try:
            directory = resolve_in_root(root, root / place)
            if not directory.is_dir() or directory.is_symlink():
                continue
            names = [path.name for path in directory.glob("libsystemd-shared-*.so")]
        except (OSError, BootcBoxError):  # unreadable, or a loop of links
            continue
        for name in names:
            if number := re.match(r"libsystemd-shared-([0-9]{1,4})[.-]", name):
                versions.append(int(number[1]))
    return max(versions, default=None)


def wants_agent(transport: Transport, root: Path, *, may_save: bool) -> bool:
    """Whether an image's boots get the unit as an agent beside sshd: when a
    state of them may be saved, and the image's systemd can take the unit."""
    if transport is not Transport.SSH or not may_save:
        return False
    version = find_systemd_version(root)
    return version is not None and version >= AGENT_SYSTEMD


def gets_unit(transport: Transport, agent: bool) -> bool:
    """Whether a boot gets bootc-box's unit, its karg and its ports: as the
    transport, or as the agent beside sshd."""
    return transport is Transport.SERIAL or agent


def choose_transport(choice: Transport, root: Path, image: str, needs_login: bool) -> Transport:
    """ssh unless asked otherwise, or the image has no sshd (auto); a run
    that needs a login (a shell, a VM that stays up) needs sshd."""
    has_sshd = image_has_sshd(root)
    if choice is Transport.AUTO:
        choice = Transport.SSH if has_sshd else Transport.SERIAL
    if choice is Transport.SERIAL and needs_login:
        why = "is run with --exec-transport serial" if has_sshd else "has no sshd"
        raise BootcBoxError(
            f"{image} {why}: bootc-box can only run a command in it, not a shell "
            "or a VM that stays up (-d, --persistent, ssh, cp)",
            f"give the command: bootc-box run {image} -- CMD, or add openssh-server to the image",
        )
    return choice


def guest_digest() -> str:
    """What the guest is given, as a version for the saved-state key."""
    return hashlib.sha256((GUEST_UNIT + GUEST_SCRIPT).encode()).hexdigest()[:16]


def guest_credentials(directory: Path) -> tuple[Path, Path]:
    return (
        write_credential(directory, f"systemd.extra-unit.{UNIT}", GUEST_UNIT.encode()),
        write_credential(directory, SCRIPT, GUEST_SCRIPT.encode()),
    )


def serial_ports(workdir: Path) -> tuple[tuple[str, Path], ...]:
    """The ports a machine gets (QemuSpec.ports): name and socket."""
    return tuple((name, workdir / f"{name.rsplit('.', 1)[1]}.sock") for name in PORTS)


def command_line(command: tuple[str, ...], now: float, token: bytes) -> bytes:
    """What the host sends: its time (to the millisecond: a restored guest's
    clock is that of its save), the token that ends the output streams
    (StreamEnd), and the command as ssh would pass it."""
    encoded = base64.b64encode(remote_command(command).encode()).decode("ascii")
    return f"{now:.3f} {token.decode('ascii')} {encoded}\n".encode()


def parse_status(line: str) -> int | None:
    """The command's exit status from the guest's `exit N` line."""
    word, _, number = line.partition(" ")
    if word != "exit" or not number.isdigit() or int(number) > 255:
        return None
    return int(number)


@dataclass
class Session:
    """The host's ends of the three ports, connected."""

    control: socket.socket
    stdout: socket.socket
    stderr: socket.socket
    pending: bytes = field(default=b"", init=False)

    def line(self, timeout: float) -> str | None:
        """The next line the guest sent on the control port; None when none
        came within `timeout`; EOFError when QEMU closed the port."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.control.settimeout(left)
            try:
                data = self.control.recv(4096)
            except TimeoutError:
                return None
            if not data:
                raise EOFError
            self.pending += data
            if len(self.pending) > 4096:  # the guest's lines are short
                raise BootcBoxError("the guest sent a control line longer than 4096 bytes")
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def said(self, word: str, timeout: float) -> bool:
        """Whether the guest's next line, within `timeout`, is `word`
        (False once QEMU closed the port: its exit is for the caller)."""
        try:
            return self.line(timeout) == word
        except EOFError:
            return False

    def send(self, data: bytes) -> None:
        self.control.settimeout(None)
        self.control.sendall(data)


@contextmanager
def start_session(ports: tuple[tuple[str, Path], ...]) -> Iterator[Session]:
    """Connect to the ports' sockets, which QEMU listens on from its start;
    the guest's writes wait until the host is connected."""
    sockets: list[socket.socket] = []
    try:
        for _, path in ports:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.connect(str(path))
        control, stdout, stderr = sockets
        yield Session(control, stdout, stderr)
    finally:
        for sock in sockets:
            sock.close()


class StreamEnd:
    """Passes a stream on up to `token`, which the guest writes after the
    command's last byte (the ports keep order): the host knows the output is
    whole without waiting for the guest's power-off. Holds back only what
    could be the token's start."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.held = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        """What of `data` is output, once what could be the token is known
        not to be."""
        if self.ended:
            return b""
        self.held += data
        at = self.held.find(self.token)
        if at >= 0:
            self.ended = True
            return self.held[:at]
        # The longest end of what came that the token could go on from: a
        # command's "started\n" is passed on at once, not held until more.
        longest = min(len(self.token) - 1, len(self.held))
        keep = next((k for k in range(longest, 0, -1) if self.held.endswith(self.token[:k])), 0)
        cut = len(self.held) - keep
        out, self.held = self.held[:cut], self.held[cut:]
        return out

    def close(self) -> bytes:
        """What was held back, when the stream ended without its token."""
        rest, self.held = (b"" if self.ended else self.held), b""
        self.ended = True
        return rest


class OutputCopies:
    """Threads copying the command's stdout and stderr to ours as they come,
    each until the stream's end (its token, or QEMU closing the port)."""

    def __init__(self, session: Session, out: BinaryIO, err: BinaryIO, token: bytes) -> None:
        self.sockets = (session.stdout, session.stderr)
        self.threads = [
            threading.Thread(target=self._copy, args=(sock, target, StreamEnd(token)), daemon=True)
            for sock, target in zip(self.sockets, (out, err), strict=True)
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _copy(source: socket.socket, target: BinaryIO, end: StreamEnd) -> None:
        shown = True
        while not end.ended:
            data = source.recv(65536)
            output = end.feed(data) if data else end.close()
            if shown and output:
                try:
                    target.write(output)
                    target.flush()
                except OSError:  # our reader went away: the guest's output still drains
                    shown = False

    def wait(self, timeout: float) -> bool:
        """Whether both streams ended within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def stop(self) -> None:
        """End the copies at what has come (what is queued is still read)."""
        for sock in self.sockets:
            sock.shutdown(socket.SHUT_RD)
        for thread in self.threads:
            thread.join()


@contextmanager
def start_output_copies(
    session: Session, out: BinaryIO, err: BinaryIO, token: bytes
) -> Iterator[OutputCopies]:
    """Output copies that end with the block, at the latest."""
    copies = OutputCopies(session, out, err, token)
    try:
        yield copies
    finally:
        copies.stop()


class CommandUnstarted(BootcBoxError):
    """The guest did not start the command it was sent."""


# A guest that waits for its command answers at once; a restored one that
# does not in this long did not come back.
START_TIMEOUT = 60.0
# How long the output may take to arrive after the exit status, which the
# guest sent after it: in order, and at once, unless the guest is broken.
DRAIN_TIMEOUT = 30.0


def run_serial_command(
    session: Session,
    command: tuple[str, ...],
    machine: Machine,
    *,
    out: BinaryIO,
    err: BinaryIO,
) -> int:
    """Send the guest its command, copy its output, return its exit status
    once the output is whole. The guest powers itself off after; the run
    stops QEMU as it would after a command over SSH (nothing to keep)."""
    token = secrets.token_hex(16).encode()
    with start_output_copies(session, out, err, token) as copies:
        session.send(command_line(command, time.time(), token))
        if next_line(session, machine, START_TIMEOUT) != "started":
            raise CommandUnstarted(
                f"the guest did not start the command within {START_TIMEOUT:.0f} s"
            )
        status = None
        while status is None:
            line = next_line(session, machine, None)
            status = parse_status(line or "")
        if not copies.wait(DRAIN_TIMEOUT):
            log.warning("the command's output did not end within %.0f s of its exit status;"
                        " it may be cut short", DRAIN_TIMEOUT)  # fmt: skip
    return status


def next_line(session: Session, machine: Machine, timeout: float | None) -> str | None:
    """The guest's next control line; None after `timeout` seconds (None:
    no limit). An error when the machine stops first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        try:
            line = session.line(1.0)
        except EOFError:
            line = None
        if line:
            return line
        machine.check_servers()
        status = machine.qemu.poll()
        if status is not None:
            raise BootcBoxError(
                f"the VM stopped while the command ran (QEMU status {status}): "
                f"{last_line(machine.qemu_log) or last_line(machine.spec.console_log)}",
                "bootc-box logs shows the guest's console",
            )
    return None
