"""`bootc-box run`: boot an image as a VM and run a command or a shell in it,
or keep it up (in the foreground, or detached under a supervisor)."""

import dataclasses
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.accel import Accel, AccelChoice, choose_accel
from bootc_box.binds import Bind, bind_kargs, bind_tag, check_bind_sources
from bootc_box.boot_cache import cached_boot_files
from bootc_box.console import start_console_follower
from bootc_box.credentials import write_credential
from bootc_box.detach import start_detached
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import ImageRef, PullOptions, mount_image, parse_image_ref, resolve_image
from bootc_box.kernel import BootFiles
from bootc_box.processes import last_line, wait_until
from bootc_box.publish import Publish
from bootc_box.qemu import (
    PortInUse,
    QemuSpec,
    kernel_cmdline,
    power_off,
    require_qemu,
    start_qemu,
    wait_for_monitor,
)
from bootc_box.ssh import SshTarget, check_private_key, connect, generate_key, public_key, ssh_ready
from bootc_box.virtiofsd import Virtiofsd, VirtiofsdSpec, start_virtiofsd
from bootc_box.vms import VmEntry, VmState, check_name, claim_vm_dir, new_name, supervise_vm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    image: str
    command: tuple[str, ...] = ()
    memory_mib: int = 2048
    cpus: int = 2
    kargs: tuple[str, ...] = ()
    accel: AccelChoice = AccelChoice.AUTO
    console: bool = False
    timeout: float = 600.0
    tty: bool = False
    pull: PullOptions = field(default_factory=PullOptions)
    name: str | None = None
    detach: bool = False
    publish: tuple[Publish, ...] = ()
    binds: tuple[Bind, ...] = ()
    ssh_key: Path | None = None
    # Seconds a guest gets to shut down after its power button is pressed;
    # below podman stop's default 10 s so the clean-up still fits.
    stop_timeout: float = 8.0

    @property
    def keeps_running(self) -> bool:
        """No command and no terminal: the VM stays up until it is stopped."""
        return self.detach or not (self.command or self.tty)


def free_port() -> int:
    """A loopback port nobody listens on now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def progress(what: str, every: float = 15.0) -> Callable[[float], None]:
    """A tick callback that says `what` with the elapsed time now and then."""
    next_report = [every]

    def tick(elapsed: float) -> None:
        if elapsed >= next_report[0]:
            log.info("%s (%d s)", what, elapsed)
            next_report[0] += every

    return tick


BOOT_ATTEMPTS = 2


class BootAgain(BootcBoxError):
    """A boot failed for a reason that a second boot need not meet."""


class GuestStalled(BootAgain):
    """The guest kernel reported CPUs that stopped running."""


STALL_REPORT = b"detected stalls on CPUs"


class StallWatch:
    """Under TCG on a small host, a guest vCPU now and then stops getting timer
    interrupts for good (seen in about 2 of 100 boots here); the kernel says
    so within ~21 s, and the boot would otherwise hang until --timeout. A
    stall can also pass, and the boot go on: only a stall report followed by
    `quiet` seconds without a new console line, or a second report, counts."""

    def __init__(self, console: Path, quiet: float = 20.0) -> None:
        self.console = console
        self.quiet = quiet
        self.size = -1
        self.grew_at = 0.0

    def stalled(self, now: float) -> bool:
        try:
            text = self.console.read_bytes()
        except FileNotFoundError:
            return False
        if len(text) != self.size:
            self.size, self.grew_at = len(text), now
        reports = text.count(STALL_REPORT)
        return reports >= 2 or (reports == 1 and now - self.grew_at >= self.quiet)


@dataclass(frozen=True)
class Prepared:
    """What every boot attempt of one run shares."""

    root: Path
    boot: BootFiles
    qemu: str
    accel: Accel
    key: Path
    credential: Path
    # Called once QEMU has read the boot files: lets go of their cache entry.
    files_read: Callable[[], None]


def with_absolute_paths(spec: RunSpec, cwd: Path) -> RunSpec:
    """`spec` with every path the user gave made absolute against `cwd`: a
    detached supervisor runs in /, where `--ssh-key ./k` names nothing."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else cwd / path

    ref = parse_image_ref(spec.image)
    image = spec.image
    if ref.transport:
        image = f"{ref.transport}:{cwd / ref.path}{ref.name[len(ref.path) :]}"
    return dataclasses.replace(
        spec,
        image=image,
        ssh_key=absolute(spec.ssh_key),
        pull=dataclasses.replace(
            spec.pull, cert_dir=absolute(spec.pull.cert_dir), authfile=absolute(spec.pull.authfile)
        ),
        binds=tuple(dataclasses.replace(b, source=cwd / b.source) for b in spec.binds),
    )


def run_run(spec: RunSpec) -> int:
    """Check what can be checked before anything is allocated, then run the
    VM here, or under a detached supervisor."""
    spec = with_absolute_paths(spec, Path.cwd())
    env = probe_environment()
    qemu = require_qemu()
    ref = parse_image_ref(spec.image)
    check_bind_sources(spec.binds, env)
    if spec.ssh_key:
        check_private_key(spec.ssh_key)
    directory = claim_vm_dir(env, check_name(spec.name) if spec.name else new_name())
    if spec.detach:
        return start_detached(directory, lambda: supervise(spec, env, qemu, ref, directory))
    return supervise(spec, env, qemu, ref, directory)


def supervise(spec: RunSpec, env: Environment, qemu: str, ref: ImageRef, directory: Path) -> int:
    with ExitStack() as stack:
        vm = stack.enter_context(supervise_vm(directory, spec.image, detached=spec.detach))
        image_id = resolve_image(ref, env, spec.pull)
        vm.update(image_id=image_id)
        root = stack.enter_context(mount_image(image_id, env))
        # Held until QEMU has read the kernel and initramfs.
        boot_lock = stack.enter_context(ExitStack())
        boot = boot_lock.enter_context(cached_boot_files(env, image_id, root, spec.image))
        accel = choose_accel(spec.accel, qemu, boot.kernel, env.kvm_hint)
        key = spec.ssh_key or generate_key(directory)
        credential = write_credential(directory, "ssh.authorized_keys.root", public_key(key))
        vm.update(
            ssh_key=str(key),
            publish=tuple(str(p) for p in spec.publish),
            binds=tuple(str(b) for b in spec.binds),
        )
        prepared = Prepared(root, boot, qemu, accel, key, credential, boot_lock.close)
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            if attempt > 1:  # the first QEMU let go of the files once it had read them
                boot = boot_lock.enter_context(cached_boot_files(env, image_id, root, spec.image))
                prepared = dataclasses.replace(prepared, boot=boot)
            attempt_dir = directory / f"boot-{attempt}"
            attempt_dir.mkdir()
            try:
                return boot_and_run(spec, prepared, attempt_dir, vm)
            except BootAgain as failed:
                if attempt == BOOT_ATTEMPTS:
                    raise
                log.warning("%s; booting it again", failed.message)
    raise AssertionError("unreachable")


def boot_and_run(spec: RunSpec, prepared: Prepared, workdir: Path, vm: VmEntry) -> int:
    """One boot: virtiofsd for the root and each bind, QEMU, wait for SSH,
    then the command or shell, or keep the VM up until it is stopped."""
    with ExitStack() as stack:
        root = stack.enter_context(
            start_virtiofsd(
                VirtiofsdSpec(prepared.root, workdir / "rootfs.sock"), workdir / "virtiofsd.log"
            )
        )
        binds = [
            stack.enter_context(
                start_virtiofsd(
                    VirtiofsdSpec(
                        bind.source, workdir / f"{bind_tag(i)}.sock", bind.readonly, host_edits=True
                    ),
                    workdir / f"virtiofsd-{bind_tag(i)}.log",
                )
            )
            for i, bind in enumerate(spec.binds)
        ]
        servers = (root, *binds)
        console_log = workdir / "console.log"
        qmp_socket = workdir / "qmp.sock"
        vm_spec = QemuSpec(
            accel=prepared.accel,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            kernel=prepared.boot.kernel,
            initramfs=prepared.boot.initramfs,
            cmdline=kernel_cmdline((*bind_kargs(spec.binds), *spec.kargs)),
            virtiofs_socket=root.socket,
            ssh_port=free_port(),
            console_log=console_log,
            credential_files=(prepared.credential,),
            publish=spec.publish,
            shares=tuple((bind_tag(i), b.socket) for i, b in enumerate(binds)),
            qmp_socket=qmp_socket,
        )
        log.info("Booting %s (kernel %s, %s)", spec.image, prepared.boot.kver, prepared.accel.name)
        started = time.monotonic()
        qemu_log = workdir / "qemu.log"
        qemu = stack.enter_context(start_qemu(vm_spec, qemu_log, prepared.qemu))
        try:
            wait_for_monitor(qemu, qmp_socket, qemu_log)
        except PortInUse as e:
            if e.port != vm_spec.ssh_port:
                raise
            # Ports are picked free, then bound by QEMU: another run may
            # have bound this one in between.
            raise BootAgain(f"another program took port {e.port} before QEMU could") from e
        prepared.files_read()
        target = SshTarget("127.0.0.1", vm_spec.ssh_port, "root", prepared.key)
        vm.update(state=VmState.BOOTING, ssh_port=target.port)
        follower = None
        if spec.console or spec.keeps_running:
            follower = stack.enter_context(start_console_follower(console_log, sys.stderr.buffer))
        stalls = StallWatch(console_log)

        def booted() -> bool:
            for server in servers:
                server.check_running()
            if stalls.stalled(time.monotonic()):
                raise GuestStalled(
                    "the guest's CPUs stalled while booting",
                    "rerun; if it keeps happening, try --cpus 1 or a host with KVM",
                )
            return ssh_ready(target)

        wait_until(
            booted,
            qemu,
            spec.timeout,
            interval=1.0,
            on_exit=lambda status: BootcBoxError(
                f"the VM stopped while booting (QEMU status {status}): "
                f"{last_line(qemu_log) or last_line(console_log)}",
                "rerun with --console to see the boot",
            ),
            on_timeout=lambda: BootcBoxError(
                f"the VM did not answer SSH within {spec.timeout:.0f} s "
                f"(console: {last_line(console_log)!r})",
                "rerun with --console to see the boot, or raise --timeout",
            ),
            on_tick=progress("Waiting for the VM to answer SSH"),
        )
        log.info("VM is up after %.0f s", time.monotonic() - started)
        vm.update(state=VmState.RUNNING)
        if not spec.keeps_running:
            if spec.tty and follower:
                follower.stop()  # an interactive shell and the console would interleave
            return connect(target, spec.command, tty=spec.tty)
        # From here a stop is a power-off: the guest gets its ACPI power
        # button and a few seconds before QEMU is stopped. Registered last,
        # it runs first: QEMU still runs and the console is still followed.
        stack.callback(shut_down, qemu, qmp_socket, spec.stop_timeout)
        log.info("VM %s is running; stop it with bootc-box stop or podman stop", vm.record.name)
        return wait_while_served(qemu, servers)


def wait_while_served(qemu: "subprocess.Popen[bytes]", servers: tuple[Virtiofsd, ...]) -> int:
    """QEMU's exit status, unless a virtiofsd dies first (then the error)."""
    while True:
        try:
            return qemu.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            for server in servers:
                server.check_running()


def shut_down(qemu: "subprocess.Popen[bytes]", qmp_socket: Path, grace: float) -> None:
    if qemu.poll() is not None:  # the guest powered itself off
        return
    log.info("Powering the VM off")
    if power_off(qemu, qmp_socket, grace):
        log.info("The VM powered off")
    else:
        log.warning("the VM did not power off within %.0f s; stopping it", grace)
