"""`bootc-box run`: boot an image as a VM and run a command or a shell in it,
or keep it up (in the foreground, or detached under a supervisor)."""

import dataclasses
import itertools
import logging
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.accel import Accel, AccelChoice, ProbeBoot, choose_accel
from bootc_box.binds import Bind, bind_kargs, bind_owner, bind_tag, check_bind_sources
from bootc_box.boot_cache import BootFilesLease
from bootc_box.console import StallWatch, start_console_follower
from bootc_box.credentials import login_credentials
from bootc_box.detach import SUPERVISOR_LOG, start_detached
from bootc_box.disks import open_disk
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import require_ovmf, vm_firmware
from bootc_box.hostkeys import host_key_tmpfiles, make_host_key
from bootc_box.identity import HostKeys, give_own_identity, new_host_keys
from bootc_box.images import (
    ImageRef,
    PullOptions,
    check_archive,
    mount_image,
    parse_image_ref,
    resolve_image,
)
from bootc_box.kargs import image_kargs
from bootc_box.kernel import BootFiles
from bootc_box.locks import hold_lock
from bootc_box.machine import BootAgain, FileServer, Machine, start_machine
from bootc_box.migration import load_state, save_state
from bootc_box.network import Network
from bootc_box.processes import last_line, wait_until
from bootc_box.progress import Progress, start_progress
from bootc_box.publish import Publish
from bootc_box.qemu import Disk, Firmware, QemuSpec, disk_cmdline, kernel_cmdline, require_qemu
from bootc_box.snapshots import discard_snapshot, program_versions, snapshot_key
from bootc_box.ssh import (
    FirstLogin,
    SshTarget,
    check_private_key,
    connect,
    generate_key,
    public_key,
)
from bootc_box.userns import enter_podman_userns
from bootc_box.virtiofsd import (
    VirtiofsdSpec,
    find_virtiofsd,
    require_id_translation,
    require_virtiofsd,
)
from bootc_box.vms import VmEntry, VmState, check_name, claim_vm_dir, new_name, supervise_vm
from bootc_box.warm import Start, Warm, choose_start

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
    # The guest may reach the host's loopback at 10.0.2.2 (network.py).
    allow_host_loopback: bool = False
    binds: tuple[Bind, ...] = ()
    ssh_key: Path | None = None
    # Seconds a guest gets to shut down after its power button is pressed;
    # below podman stop's default 10 s so the clean-up still fits.
    stop_timeout: float = 8.0
    # Restore a saved state of this image and machine when there is one,
    # and save one after a cold boot (--warm=auto); never: always boot.
    warm: bool = True
    # Boot this disk under UEFI instead of the image (`image` then unused).
    disk: Disk | None = None
    # More disks to attach (to-disk's output).
    disks: tuple[Disk, ...] = ()
    # What the run boots, in messages and `list`, when not IMAGE or the disk.
    label: str = ""
    # A VM that keeps its state (persistent.py): boot its disk with its own
    # UEFI variable store, holding its lock so that it runs once at a time.
    efi_vars: Path | None = None
    persistent_lock: Path | None = None

    @property
    def title(self) -> str:
        return self.label or (f"disk {self.disk.path}" if self.disk else self.image)

    @property
    def keeps_running(self) -> bool:
        """No command and no terminal: the VM stays up until it is stopped."""
        return self.detach or not (self.command or self.tty)


def free_port() -> int:
    """A loopback port nobody listens on now (passt binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def report_waiting(what: str, every: float = 15.0) -> Callable[[float], None]:
    """A tick callback that says `what` with the elapsed time now and then."""
    next_report = [every]

    def tick(elapsed: float) -> None:
        if elapsed >= next_report[0]:
            log.info("%s (%d s)", what, elapsed)
            next_report[0] += every

    return tick


BOOT_ATTEMPTS = 2
# A restored guest answers SSH within seconds; one that does not in this
# long is not going to, and a cold boot is the way on.
RESTORE_TIMEOUT = 60.0


class RestoreFailed(BootAgain):
    """A saved state did not come up; the run boots cold instead."""


class GuestStalled(BootAgain):
    """The guest kernel reported CPUs that stopped running."""


@dataclass(frozen=True)
class Prepared:
    """What every boot attempt of one run shares."""

    key: Path
    # A cold boot's: the public half of `key`, and its host key.
    credentials: tuple[Path, ...]
    host_key: str
    qemu: str
    accel: Accel
    image_id: str = ""
    # An image run: the mounted image, its kernel and initramfs, and their
    # hold on the cache (taken for each boot until QEMU has read them).
    root: Path | None = None
    boot: BootFiles | None = None
    boot_lease: BootFilesLease | None = None
    # From the image's /usr/lib/bootc/kargs.d, before the user's --karg.
    image_kargs: tuple[str, ...] = ()
    # A disk boot: the UEFI firmware.
    firmware: Firmware | None = None


def what_to_boot(
    disk: Path | None, image: str | None, args: tuple[str, ...]
) -> tuple[str, tuple[str, ...]] | None:
    """`run`'s IMAGE and COMMAND from its operands; with --disk no IMAGE is
    named, so what was taken for one begins the command. None: no IMAGE."""
    if disk:
        image, args = str(disk), (image, *args) if image else args
    if image is None:
        return None
    return image, args[1:] if args[:1] == ("--",) else args


def with_absolute_paths(spec: RunSpec, cwd: Path) -> RunSpec:
    """`spec` with every path the user gave made absolute against `cwd`: a
    detached supervisor runs in /, where `--ssh-key ./k` names nothing."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else cwd / path

    image, disk = spec.image, spec.disk
    if disk:
        disk = dataclasses.replace(disk, path=cwd / disk.path)
        image = str(disk.path)
    elif (ref := parse_image_ref(spec.image)).transport:
        image = f"{ref.transport}:{cwd / ref.path}{ref.name[len(ref.path) :]}"
    return dataclasses.replace(
        spec,
        image=image,
        disk=disk,
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
    ref = None
    if spec.disk:
        spec = dataclasses.replace(spec, disk=open_disk(spec.disk, env))
        require_ovmf()
    else:
        ref = parse_image_ref(spec.image)
        check_archive(ref, env)
    qemu = require_qemu()
    virtiofsd = require_virtiofsd()
    check_bind_sources(spec.binds, env)
    if not all(bind.readonly for bind in spec.binds):
        require_id_translation(virtiofsd)
    if spec.ssh_key:
        check_private_key(spec.ssh_key)
    enter_podman_userns(env)
    directory = claim_vm_dir(
        env, check_name(spec.name) if spec.name else new_name(), kept=bool(spec.persistent_lock)
    )
    if spec.detach:
        return start_detached(directory, lambda: supervise(spec, env, qemu, ref, directory))
    return supervise(spec, env, qemu, ref, directory)


def supervise(
    spec: RunSpec, env: Environment, qemu: str, ref: ImageRef | None, directory: Path
) -> int:
    with ExitStack() as stack:
        vm = stack.enter_context(supervise_vm(directory, spec.title, detached=spec.detach))
        if spec.persistent_lock:
            assert spec.name, "a VM that keeps its state has a name"
            stack.enter_context(hold_lock(spec.persistent_lock, already_running(spec.name)))
        progress = stack.enter_context(start_progress(spec.console or spec.keeps_running))
        if ref is None:
            prepared = prepare_disk(spec, env, qemu, directory)
        else:
            prepared = prepare_image(spec, env, qemu, ref, vm=vm, progress=progress, stack=stack)
        vm.update(
            ssh_key=str(prepared.key),
            publish=tuple(str(p) for p in spec.publish),
            binds=tuple(str(b) for b in spec.binds),
        )
        warm = None
        # A disk changes under a saved state: disk boots and runs with disks
        # attached always boot.
        if spec.warm and env.cache_kept and prepared.boot and not spec.disks:
            versions = program_versions(qemu, find_virtiofsd() or Path("virtiofsd"), prepared.accel)
            machine = vm_spec(spec, prepared, Path("/vm"), 0)
            warm = Warm(snapshot_key(prepared.image_id, machine, versions), versions)
        cold_attempts = 0
        # Ends: a failed restore turns restores off, a failed save turns
        # warm starts off, and cold boots are tried BOOT_ATTEMPTS times.
        for attempt in itertools.count(1):
            if prepared.boot_lease:  # taken again after an earlier QEMU let go of them
                prepared = dataclasses.replace(prepared, boot=prepared.boot_lease.take())
            attempt_dir = directory / f"boot-{attempt}"
            attempt_dir.mkdir()
            cold = Start(prepared.credentials, prepared.key, prepared.host_key)
            with choose_start(env, cold, warm, attempt_dir) as start:
                try:
                    return boot_and_run(spec, prepared, attempt_dir, vm, start, progress=progress)
                except RestoreFailed as failed:
                    log.warning("%s; booting cold", failed.message)
                    assert warm is not None
                    start.loaded()
                    discard_snapshot(env, warm.key)
                    # What this run saved did not work: it saves nothing more.
                    warm = None if start.save else dataclasses.replace(warm, restore=False)
                except BootAgain as failed:
                    cold_attempts += 1
                    if cold_attempts == BOOT_ATTEMPTS:
                        raise
                    log.warning("%s; booting it again", failed.message)
    raise AssertionError("unreachable")


def prepare_image(
    spec: RunSpec,
    env: Environment,
    qemu: str,
    ref: ImageRef,
    *,
    vm: VmEntry,
    progress: Progress,
    stack: ExitStack,
) -> "Prepared":
    """The image pulled (if need be) and mounted (on `stack`), its boot files
    found and held, the accelerator chosen, the SSH key made."""
    pulled = [""]  # podman's last line: which layer it copies
    progress.begin("pull", lambda: pulled[-1])
    image_id = resolve_image(ref, env, spec.pull, pulled.append)
    vm.update(image_id=image_id)
    progress.begin("mount")
    root = stack.enter_context(mount_image(image_id, env))
    progress.begin("boot files")
    lease = stack.enter_context(BootFilesLease(env, image_id, root, spec.image))
    boot = lease.take()
    accel = choose_accel(spec.accel, qemu, ProbeBoot(kernel=boot.kernel), env.kvm_hint)
    key, credentials, host_key = run_keys(spec, vm.directory)
    return Prepared(
        key, credentials, host_key, qemu, accel, image_id, root, boot, lease,
        image_kargs(root, spec.image),
    )  # fmt: skip


def prepare_disk(spec: RunSpec, env: Environment, qemu: str, directory: Path) -> "Prepared":
    """UEFI firmware with the VM's own variable store, the accelerator, the key."""
    ovmf = require_ovmf()
    firmware = vm_firmware(ovmf, directory, spec.efi_vars)
    boot = ProbeBoot(firmware=(ovmf.code, ovmf.vars_template))
    accel = choose_accel(spec.accel, qemu, boot, env.kvm_hint)
    key, credentials, host_key = run_keys(spec, directory, forget_old_keys=True)
    return Prepared(key, credentials, host_key, qemu, accel, firmware=firmware)


# A disk keeps /root/.ssh/authorized_keys from its first boot, and systemd's
# provisioning (`f^` in tmpfiles.d/provision.conf) never overwrites it: the
# next run's key would be refused. systemd-tmpfiles removes before it
# creates, so this line lets every boot write the file from its own credential.
FORGET_OLD_KEYS = b"r /root/.ssh/authorized_keys\n"


def already_running(name: str) -> BootcBoxError:
    return BootcBoxError(
        f"VM {name} is already running (here or in another box)",
        f"stop it first: bootc-box stop {name}",
    )


def run_keys(
    spec: RunSpec, directory: Path, *, forget_old_keys: bool = False
) -> tuple[Path, tuple[Path, ...], str]:
    """The key the run logs in with, the credentials that hand the guest
    its public half and a new host key, and that host key's public half."""
    key = spec.ssh_key or generate_key(directory)
    host_key = make_host_key()
    tmpfiles = (FORGET_OLD_KEYS if forget_old_keys else b"") + host_key_tmpfiles(host_key)
    return key, login_credentials(directory, public_key(key), tmpfiles), host_key.public


def bind_tags(binds: tuple[Bind, ...]) -> list[str]:
    return [bind_tag(i) for i in range(len(binds))]


def vm_spec(
    spec: RunSpec,
    prepared: Prepared,
    workdir: Path,
    ssh_port: int,
    *,
    credentials: tuple[Path, ...] = (),
    incoming: bool = False,
) -> QemuSpec:
    """The machine of one boot attempt, its sockets and logs in `workdir`:
    the image's kernel with its root over virtiofs, or the disk under UEFI."""
    kargs = (*bind_kargs(spec.binds), *prepared.image_kargs, *spec.kargs)
    boot = prepared.boot
    return QemuSpec(
        accel=prepared.accel,
        memory_mib=spec.memory_mib,
        cpus=spec.cpus,
        kernel=boot.kernel if boot else None,
        initramfs=boot.initramfs if boot else None,
        # A disk's boot loader has its own options; these are added to them.
        cmdline=kernel_cmdline(kargs) if boot else disk_cmdline(kargs),
        virtiofs_socket=workdir / "rootfs.sock" if boot else None,
        network=Network(workdir / "network.sock", ssh_port, spec.publish, spec.allow_host_loopback),
        console_log=workdir / "console.log",
        credential_files=credentials or prepared.credentials,
        shares=tuple((tag, workdir / f"{tag}.sock") for tag in bind_tags(spec.binds)),
        qmp_socket=workdir / "qmp.sock",
        incoming=incoming,
        disks=(*((spec.disk,) if spec.disk else ()), *spec.disks),
        firmware=prepared.firmware,
    )


def boot_and_run(
    spec: RunSpec,
    prepared: Prepared,
    workdir: Path,
    vm: VmEntry,
    start: Start,
    *,
    progress: Progress,
) -> int:
    """One boot (or restore): the machine, wait for SSH, then the command or
    shell, or keep the VM up until it is stopped."""
    restore = bool(start.restore)
    machine_spec = vm_spec(
        spec, prepared, workdir, free_port(), credentials=start.credentials, incoming=restore
    )
    if restore:
        log.info("Restoring %s from its saved state", spec.image)
    elif prepared.boot:
        log.info("Booting %s (kernel %s, %s)", spec.title, prepared.boot.kver, prepared.accel.name)
    else:
        log.info("Booting %s (UEFI, %s)", spec.title, prepared.accel.name)
    console_log = machine_spec.console_log
    progress.begin("restore" if restore else "boot", lambda: last_line(console_log))
    following = spec.console or spec.keeps_running
    with (
        # Made while QEMU starts, if the guest will need them: ~0.3 s that a
        # restore would otherwise wait.
        ThreadPoolExecutor(1) as making,
        # Outside the machine, so that its power-off is followed too.
        start_console_follower(console_log, sys.stderr.buffer)
        if following
        else nullcontext() as follower,
    ):
        host_keys = making.submit(new_host_keys) if start.login_key != prepared.key else None
        with start_machine(
            machine_spec,
            file_servers(spec, prepared, machine_spec, workdir),
            prepared.qemu,
            workdir / "qemu.log",
            # A disk keeps what the guest writes, so it always ends with a
            # power-off, even after a command: stopping QEMU outright would
            # lose what the guest still holds in its page cache.
            graceful=prepared.firmware is not None,
            grace=spec.stop_timeout,
            console_copies=(workdir.parent / SUPERVISOR_LOG,),
        ) as machine:
            if prepared.boot_lease:
                prepared.boot_lease.release()  # QEMU has read them
            vm.update(
                state=VmState.BOOTING, ssh_port=machine_spec.network.ssh_port, start=start.kind
            )
            target = come_up(
                spec,
                prepared,
                start,
                machine,
                host_keys.result if host_keys else None,
                progress=progress,
            )
            log.info("%s", progress.done(start.kind))
            vm.update(state=VmState.RUNNING, ssh_host_key=target.host_key or "")
            if not spec.keeps_running:
                if spec.tty and follower:
                    follower.stop()  # an interactive shell and the console would interleave
                return connect(target, spec.command, tty=spec.tty)
            # From here a stop is a power-off: the guest gets its ACPI power
            # button and a few seconds before QEMU is stopped.
            machine.graceful = True
            log.info("VM %s is running; stop it with bootc-box stop or podman stop", vm.record.name)
            return machine.wait()


def file_servers(
    spec: RunSpec, prepared: Prepared, machine: QemuSpec, workdir: Path
) -> tuple[FileServer, ...]:
    """virtiofsd for the image's root (unless a disk is the root) and for each --bind."""
    root = []
    if prepared.root and machine.virtiofs_socket:
        root.append(FileServer(
            VirtiofsdSpec(prepared.root, machine.virtiofs_socket), workdir / "virtiofsd.log"
        ))  # fmt: skip
    binds = [
        FileServer(
            VirtiofsdSpec(
                bind.source, path, bind.readonly, host_edits=True, owner=bind_owner(bind)
            ),
            workdir / f"virtiofsd-{tag}.log",
        )
        for bind, (tag, path) in zip(spec.binds, machine.shares, strict=True)
    ]
    return (*root, *binds)


def come_up(
    spec: RunSpec,
    prepared: Prepared,
    start: Start,
    machine: Machine,
    host_keys: Callable[[], HostKeys] | None,
    *,
    progress: Progress,
) -> SshTarget:
    """From a started QEMU to a guest that lets the run's key in: load the
    saved state, or wait for the boot and save it; then give the guest its
    own identity if it began as a snapshot's."""
    started = time.monotonic()
    if start.restore:
        try:
            load_state(machine.qmp_socket, machine.qemu, start.restore.state)
        except (BootcBoxError, OSError, ValueError) as e:
            # A QEMU that refused the state may be gone before it says why.
            reason = last_line(machine.qemu_log) or str(e)
            raise RestoreFailed(f"could not load the saved state ({reason})") from e
        start.loaded()
        log.debug("loaded the saved state in %.1f s", time.monotonic() - started)
    target = SshTarget(
        "127.0.0.1", machine.spec.network.ssh_port, "root", start.login_key, start.host_key
    )
    if start.save:
        login = FirstLogin(target, machine.spec.console_log.with_name("known_hosts"))
        wait_for_ssh(spec, start, machine, login)
        target = login.target
        progress.begin("save")
        save_for_later(spec, prepared, start, machine, target)
    if host_keys is not None:
        progress.begin("ssh")
        run_key = public_key(prepared.key)
        keys: list[HostKeys] = []

        def give_identity() -> bool:
            keys[:] = keys or [host_keys()]
            return give_own_identity(target, run_key, keys[0].tar)

        # A restored guest's first login is this one, with no probe before
        # it: each login costs most of a second under TCG.
        try:
            wait_for_ssh(spec, start, machine, give_identity)
        except RestoreFailed:
            raise
        except BootcBoxError as e:
            # Also in the run that saved the state: the state is no good.
            raise RestoreFailed(e.message) from e
        log.debug("the guest has its own keys and time")
        return dataclasses.replace(target, key=prepared.key, host_key=keys[0].ed25519)
    login = FirstLogin(target, machine.spec.console_log.with_name("known_hosts"))
    wait_for_ssh(spec, start, machine, login)
    return login.target


def wait_for_ssh(
    spec: RunSpec, start: Start, machine: Machine, answered: Callable[[], bool]
) -> None:
    """Wait until the guest `answered` over SSH; a restored guest that does
    not, within RESTORE_TIMEOUT, is given up for a cold boot."""
    console_log = machine.spec.console_log
    stalls = StallWatch(console_log)

    def booted() -> bool:
        try:
            machine.check_servers()
            if stalls.stalled(time.monotonic()):
                raise GuestStalled(
                    "the guest's CPUs stalled while booting",
                    "rerun; if it keeps happening, try --cpus 1 or a host with KVM",
                )
            return answered()
        except BootcBoxError as e:
            if start.restore and not isinstance(e, RestoreFailed):
                raise RestoreFailed(e.message) from e  # whatever it was, boot cold
            raise

    def stopped(status: int) -> BootcBoxError:
        message = last_line(machine.qemu_log) or last_line(console_log)
        if start.restore:
            return RestoreFailed(f"the restored VM stopped (QEMU status {status}: {message})")
        return BootcBoxError(
            f"the VM stopped while booting (QEMU status {status}): {message}",
            "rerun with --console to see the boot",
        )

    def timed_out() -> BootcBoxError:
        if start.restore:
            return RestoreFailed(
                f"the restored VM did not answer SSH within {RESTORE_TIMEOUT:.0f} s"
            )
        return BootcBoxError(
            f"the VM did not answer SSH within {spec.timeout:.0f} s "
            f"(console: {last_line(console_log)!r})",
            "rerun with --console to see the boot, or raise --timeout",
        )

    wait_until(
        booted,
        machine.qemu,
        min(spec.timeout, RESTORE_TIMEOUT) if start.restore else spec.timeout,
        # A restored guest answers within a second or two: ask it often.
        interval=0.1 if start.restore else 1.0,
        on_exit=stopped,
        on_timeout=timed_out,
        on_tick=report_waiting("Waiting for the VM to answer SSH"),
    )


def save_for_later(
    spec: RunSpec, prepared: Prepared, start: Start, machine: Machine, target: SshTarget
) -> None:
    """Save the freshly booted guest for later runs, before any command of
    this one touches it. A failed save costs the next run its warm start,
    never this run."""
    assert start.save is not None
    began = time.monotonic()
    try:
        save_state(machine.qmp_socket, machine.qemu, start.save.state)
        assert target.host_key, "a login checked or learnt the saved guest's host key"
        start.save.commit(
            prepared.image_id, spec.image, machine.spec, start.versions, target.host_key
        )
    except (BootcBoxError, OSError, ValueError) as e:
        log.warning("could not save the VM's state for later runs: %s", e)
        start.save.abandon()  # another run may save it
        return
    took = time.monotonic() - began
    log.info("Saved the VM's state for the next runs of %s in %.0f s", spec.image, took)
