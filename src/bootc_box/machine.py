"""One boot attempt's machine: QEMU, its network (passt), the virtiofsd
servers of its shares and its TPM (swtpm), started together and stopped one
way, whatever ends them (the command's end, an error, SIGTERM from `podman
stop` or `bootc-box stop`, Ctrl-C)."""

import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from bootc_box.console import start_log_rotation
from bootc_box.errors import BootcBoxError
from bootc_box.network import PortInUse, start_passt
from bootc_box.qemu import QemuSpec, power_off, start_qemu, wait_for_monitor
from bootc_box.tpm import start_swtpm
from bootc_box.virtiofsd import Sandbox, Virtiofsd, VirtiofsdSpec, start_virtiofsd

log = logging.getLogger(__name__)


class BootAgain(BootcBoxError):
    """A boot failed for a reason that a second boot need not meet."""


@dataclass(frozen=True)
class FileServer:
    """A virtiofsd to start for the machine: what it shares, where it logs."""

    spec: VirtiofsdSpec
    log_file: Path


class Machine:
    """A started machine. `graceful` says how it stops: with its ACPI power
    button and up to `grace` seconds to shut down before QEMU is stopped
    (a guest that is up, or one whose disk keeps its writes), or at once (a
    guest still booting from a throwaway root, or one a command ran in)."""

    def __init__(
        self,
        qemu: "subprocess.Popen[bytes]",
        servers: tuple[Virtiofsd, ...],
        spec: QemuSpec,
        qemu_log: Path,
        *,
        graceful: bool,
        grace: float,
    ) -> None:
        self.qemu, self.servers, self.spec, self.qemu_log = qemu, servers, spec, qemu_log
        self.graceful, self.grace = graceful, grace

    @property
    def qmp_socket(self) -> Path:
        assert self.spec.qmp_socket is not None
        return self.spec.qmp_socket

    def check_servers(self) -> None:
        """The guest's files are gone with a virtiofsd: say so rather than hang."""
        for server in self.servers:
            server.check_running()

    def wait(self, watch: Callable[[], None] = lambda: None) -> int:
        """QEMU's exit status, unless a virtiofsd dies first (then the
        error); `watch` is called four times a second while QEMU runs."""
        while True:
            try:
                return self.qemu.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                self.check_servers()
                watch()

    def stop(self) -> None:
        """The one way a machine stops, after which QEMU and then the file
        servers are terminated and reaped."""
        if not self.graceful or self.qemu.poll() is not None:
            return
        log.info("Powering the VM off")
        if power_off(self.qemu, self.qmp_socket, self.grace):
            log.info("The VM powered off")
        else:
            log.warning("the VM did not power off within %.0f s; stopping it", self.grace)


@contextmanager
def start_machine(
    spec: QemuSpec,
    servers: tuple[FileServer, ...],
    qemu: str,
    qemu_log: Path,
    *,
    graceful: bool,
    grace: float,
    console_copies: tuple[Path, ...] = (),
) -> Iterator[Machine]:
    """The network and the file servers, then QEMU, up to the point where
    QEMU answers on its monitor (it has read the kernel and initramfs, or loaded its firmware).
    Until it stops, its console log and the logs it is copied into
    (`console_copies`: a detached supervisor's) are kept in bounds."""
    assert spec.qmp_socket is not None, "a machine is powered off over its monitor"
    with (
        _start_network(spec, qemu_log.with_name("passt.log")),
        start_file_servers(servers) as running,
        start_swtpm(spec.tpm, qemu_log.with_name("swtpm.log")) if spec.tpm else nullcontext(),
        start_qemu(spec, qemu_log, qemu) as process,
        start_log_rotation((spec.console_log, *console_copies)),
    ):
        wait_for_monitor(process, spec.qmp_socket, qemu_log)
        machine = Machine(process, running, spec, qemu_log, graceful=graceful, grace=grace)
        try:
            yield machine
        finally:
            machine.stop()


@contextmanager
def _start_network(spec: QemuSpec, log_file: Path) -> Iterator[None]:
    try:
        with start_passt(spec.network, log_file):
            yield
    except PortInUse as e:
        if e.port != spec.network.ssh_port:
            raise
        # Ports are picked free, then bound by passt: another run may have
        # bound this one in between.
        raise BootAgain(f"another program took port {e.port} before passt could") from e


@contextmanager
def start_file_servers(
    servers: tuple[FileServer, ...], sandboxes: tuple[Sandbox, ...] = ()
) -> Iterator[tuple[Virtiofsd, ...]]:
    """Each virtiofsd, listening, until the block ends (the last started
    stops first); all in the sandbox the first one found working."""
    if not servers:
        yield ()
        return
    first, *rest = servers
    with (
        start_virtiofsd(first.spec, first.log_file, sandboxes) as started,
        start_file_servers(tuple(rest), (started.spec.sandbox,)) as others,
    ):
        yield (started, *others)
