"""`bootc-box run`: boot an image as a VM and run a command or a shell in it."""

import logging
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.accel import Accel, AccelChoice, choose_accel
from bootc_box.boot_cache import cached_boot_files
from bootc_box.console import start_console_follower
from bootc_box.credentials import write_credential
from bootc_box.environment import probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import PullOptions, mount_image, parse_image_ref, resolve_image
from bootc_box.kernel import BootFiles
from bootc_box.processes import last_line, wait_until
from bootc_box.qemu import QemuSpec, kernel_cmdline, require_qemu, start_qemu
from bootc_box.ssh import SshTarget, generate_key, public_key, run_ssh, ssh_ready
from bootc_box.virtiofsd import VirtiofsdSpec, start_virtiofsd

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


class GuestStalled(BootcBoxError):
    """The guest kernel reported CPUs that stopped running."""


def guest_stalled(console: Path) -> bool:
    """Under TCG on a small host, a guest vCPU now and then stops getting timer
    interrupts for good (seen in about 2 of 100 boots here); the kernel says
    so within ~21 s, and the boot would otherwise hang until --timeout."""
    try:
        return b"detected stalls on CPUs" in console.read_bytes()
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class Prepared:
    """What every boot attempt of one run shares."""

    root: Path
    boot: BootFiles
    accel: Accel
    key: Path
    credential: Path
    # Called once the VM answers SSH, when QEMU has long read the boot files.
    booted: Callable[[], None]


def run_run(spec: RunSpec) -> int:
    env = probe_environment()
    qemu = require_qemu()
    ref = parse_image_ref(spec.image)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bootc-box-")))
        image_id = resolve_image(ref, env, spec.pull)
        root = stack.enter_context(mount_image(image_id, env))
        # Held until the VM is up, when QEMU has read the kernel and initramfs.
        boot_lock = stack.enter_context(ExitStack())
        boot = boot_lock.enter_context(cached_boot_files(env, image_id, root, spec.image))
        accel = choose_accel(spec.accel, qemu, boot.kernel, env.kvm_hint)
        key = generate_key(workdir)
        credential = write_credential(workdir, "ssh.authorized_keys.root", public_key(key))
        prepared = Prepared(root, boot, accel, key, credential, boot_lock.close)
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            attempt_dir = workdir / f"boot-{attempt}"
            attempt_dir.mkdir()
            try:
                return boot_and_run(spec, prepared, attempt_dir)
            except GuestStalled as stalled:
                if attempt == BOOT_ATTEMPTS:
                    raise
                log.warning("%s; booting it again", stalled.message)
    raise AssertionError("unreachable")


def boot_and_run(spec: RunSpec, prepared: Prepared, workdir: Path) -> int:
    """One boot: virtiofsd and QEMU, wait for SSH, then the command or shell."""
    with ExitStack() as stack:
        virtiofs = stack.enter_context(
            start_virtiofsd(
                VirtiofsdSpec(prepared.root, workdir / "rootfs.sock"), workdir / "virtiofsd.log"
            )
        )
        console_log = workdir / "console.log"
        vm_spec = QemuSpec(
            accel=prepared.accel,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            kernel=prepared.boot.kernel,
            initramfs=prepared.boot.initramfs,
            cmdline=kernel_cmdline(spec.kargs),
            virtiofs_socket=virtiofs,
            ssh_port=free_port(),
            console_log=console_log,
            credential_files=(prepared.credential,),
        )
        log.info("Booting %s (kernel %s, %s)", spec.image, prepared.boot.kver, prepared.accel.name)
        started = time.monotonic()
        qemu_log = workdir / "qemu.log"
        vm = stack.enter_context(start_qemu(vm_spec, qemu_log))
        with ExitStack() as console:
            if spec.console:
                console.enter_context(start_console_follower(console_log, sys.stderr.buffer))
            target = SshTarget("127.0.0.1", vm_spec.ssh_port, "root", prepared.key)

            def booted() -> bool:
                if guest_stalled(console_log):
                    raise GuestStalled(
                        "the guest's CPUs stalled while booting",
                        "rerun; if it keeps happening, try --cpus 1 or a host with KVM",
                    )
                return ssh_ready(target)

            wait_until(
                booted,
                vm,
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
            prepared.booted()
            if spec.tty and spec.console:
                console.close()  # an interactive shell and the console would interleave
            if spec.command or spec.tty:
                return run_ssh(target, spec.command, tty=spec.tty)
            log.info("VM is running; stop it with Ctrl-C or by stopping the container")
            return vm.wait()
