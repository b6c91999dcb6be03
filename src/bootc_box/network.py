"""The guest's network: passt, a user-mode network stack in a process of
its own, which QEMU reaches over a unix socket.

QEMU's own user network (slirp) maps 10.0.2.2 to the host's 127.0.0.1 and
has no option to stop it: a guest could reach every service the box (with
`--network host`, the host) listens to on loopback, other VMs' SSH among
them. passt can leave that address unmapped (`--no-map-gw`), and keeps
slirp's addresses, so a guest sees the network it always saw."""

import logging
import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, start_process, wait_until
from bootc_box.programs import require_program
from bootc_box.publish import LOOPBACK, Publish

log = logging.getLogger(__name__)

PASST = "passt"
# slirp's addresses, which images and saved states already know.
GUEST_ADDRESS = "10.0.2.15"
GATEWAY = "10.0.2.2"
# Where the guest sends DNS queries when the host's resolver is on its
# loopback (systemd-resolved's 127.0.0.53): passt forwards only port 53.
DNS_FORWARD = "10.0.2.3"


@dataclass(frozen=True)
class Network:
    """The guest's network: SSH on a loopback port of the host, the ports
    published, and whether the guest may reach the host's loopback."""

    socket: Path
    ssh_port: int
    publish: tuple[Publish, ...] = ()
    host_loopback: bool = False

    def forwards(self) -> tuple[Publish, ...]:
        # SSH listens on loopback only: the VM is not for the LAN. Published
        # ports say their address (127.0.0.1 unless the user chose another).
        return (Publish(LOOPBACK, self.ssh_port, 22), *self.publish)


def passt_argv(network: Network, binary: str = PASST) -> list[str]:
    argv = [
        binary,
        "--foreground",
        # Quits when QEMU lets go of the socket: passt drops to nobody, which
        # clears the death signal that would otherwise end it with us.
        "--one-off",
        "--socket", str(network.socket),
        "--address", GUEST_ADDRESS,
        "--netmask", "24",
        "--gateway", GATEWAY,
        "--dns-forward", DNS_FORWARD,
    ]  # fmt: skip
    if not network.host_loopback:
        # 10.0.2.2 is then only the gateway: connections to it go nowhere.
        argv.append("--no-map-gw")
    for forward in network.forwards():
        option = "--tcp-ports" if forward.protocol == "tcp" else "--udp-ports"
        argv += [option, f"{forward.host_ip}/{forward.host_port}:{forward.guest_port}"]
    return argv


class PortInUse(BootcBoxError):
    """A host port the guest's network was to forward was taken."""

    def __init__(self, port: int) -> None:
        super().__init__(
            f"host port {port} is already in use",
            "publish the guest port on another host port (-p HOSTPORT:GUESTPORT)",
        )
        self.port = port


_BIND_FAILED = re.compile(r"Failed to bind port (\d+) \(Address already in use\)")


def forwarding_failure(passt_message: str) -> int | None:
    """The host port passt could not listen on, if that is why it stopped."""
    match = _BIND_FAILED.search(passt_message)
    return int(match[1]) if match else None


def _start_failure(status: int, message: str) -> BootcBoxError:
    port = forwarding_failure(message)
    if port is not None:
        return PortInUse(port)
    return BootcBoxError(f"passt exited with status {status}: {message}")


@contextmanager
def start_passt(network: Network, log_file: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """passt, listening for QEMU on its socket. It binds the forwarded ports
    before its socket, so a socket means the ports are ours. Nothing may
    connect to them before QEMU does: passt then fails."""
    binary = require_program(PASST)
    network.socket.unlink(missing_ok=True)
    with (
        log_file.open("ab") as out,
        start_process(passt_argv(network, binary), stdout=out, stderr=out) as proc,
    ):
        wait_until(
            network.socket.is_socket,
            proc,
            timeout=10,
            on_exit=lambda status: _start_failure(status, last_line(log_file)),
            on_timeout=lambda: BootcBoxError(
                f"passt did not listen within 10 s: {last_line(log_file)}"
            ),
        )
        yield proc


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on now (passt binds it a moment later)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
