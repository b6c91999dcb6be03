"""The one entry every VM boots through (run_vm): `run`, to-disk's installer
and a kept VM's start hand it a RunSpec. It checks what it can before
anything is allocated, claims the VM's directory, and supervises its boot
attempts here or under a detached supervisor: each attempt is one machine
(machine.py), started cold or from a saved state (warm.py), brought up
(come_up.py), then running the command, a shell, or nothing until stopped."""

import dataclasses
import itertools
import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from pathlib import Path

from bootc_box import serial_exec
from bootc_box.accel import choose_accel
from bootc_box.assembly import Prepared, file_servers, vm_spec
from bootc_box.binds import bind_kargs, check_bind_sources
from bootc_box.boot import FirmwareBoot, KernelBoot
from bootc_box.boot_cache import BootFilesLease
from bootc_box.cloud_init import make_seed
from bootc_box.come_up import RestoreFailed, come_up, come_up_serial, stay_up
from bootc_box.console import start_console_follower
from bootc_box.credentials import new_login, write_private
from bootc_box.detach import SUPERVISOR_LOG, start_detached
from bootc_box.disks import open_disk
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import require_ovmf, vm_firmware
from bootc_box.host_memory import check_host_memory
from bootc_box.identity import new_host_keys
from bootc_box.images import check_archive, mount_image, parse_image_ref, resolve_image
from bootc_box.kargs import image_kargs
from bootc_box.locks import hold_lock
from bootc_box.machine import BootAgain, Machine, start_machine
from bootc_box.machine_options import MachineOptions
from bootc_box.network import free_port
from bootc_box.processes import last_line
from bootc_box.progress import Progress, start_progress
from bootc_box.provision import (
    IGNITION_FW_CFG,
    check_disk_files_exist,
    make_swap,
    storage_bind,
)
from bootc_box.qemu import require_qemu, scratch_root
from bootc_box.run_spec import DiskSource, ImageSource, RunSpec, Transport, WarmStarts
from bootc_box.serial_exec import (
    CommandUnstarted,
    Session,
    choose_transport,
    gets_unit,
    guest_credentials,
    run_serial_command,
    start_session,
    wants_agent,
)
from bootc_box.snapshots import discard_snapshot, program_versions, snapshot_key
from bootc_box.ssh import check_private_key, connect
from bootc_box.tpm import TPM_STATE, require_swtpm
from bootc_box.user_credentials import write_credentials
from bootc_box.userns import enter_podman_userns
from bootc_box.virtiofsd import (
    find_virtiofsd,
    require_id_translation,
    require_virtiofsd,
)
from bootc_box.vms import (
    VmEntry,
    VmState,
    already_running,
    check_name,
    claim_vm_dir,
    new_name,
    supervise_vm,
)
from bootc_box.warm import Start, Warm, choose_start

log = logging.getLogger(__name__)

BOOT_ATTEMPTS = 2


def run_vm(spec: RunSpec, *, installer: bool = False) -> int:
    """Boot `spec`'s VM and run its command, or keep it up: here, or under a
    detached supervisor. `installer`: to-disk's installer VM."""
    spec = spec.absolute(Path.cwd())
    env = probe_environment()
    match spec.source:
        case DiskSource() as source:
            spec = dataclasses.replace(
                spec, source=dataclasses.replace(source, disk=open_disk(source.disk, env))
            )
        case ImageSource(image):
            if spec.machine.firmware is not None:
                raise BootcBoxError(
                    "--firmware is for disks: an image boots its own kernel directly, with"
                    " no firmware to check its signature",
                    "boot a disk of it with --firmware (run --disk, or run --persistent),"
                    " or leave --firmware out",
                )
            check_archive(parse_image_ref(image), env)
    require_devices(spec.machine, disk=isinstance(spec.source, DiskSource))
    if spec.exec_transport is Transport.SERIAL and not isinstance(spec.source, ImageSource):
        raise BootcBoxError(
            "--exec-transport serial is for images only: a disk boots its own units",
            "boot the disk's image instead, or leave --exec-transport out",
        )
    qemu = require_qemu()
    virtiofsd = require_virtiofsd()
    check_host_memory(spec.machine.memory_mib)
    if spec.machine.provision.host_storage:
        spec = dataclasses.replace(spec, binds=(*spec.binds, storage_bind(env)))
    check_bind_sources(spec.binds, env)
    if not all(bind.readonly for bind in spec.binds):
        require_id_translation(virtiofsd)
    if spec.ssh_key:
        check_private_key(spec.ssh_key)
    enter_podman_userns(env)
    kept = isinstance(spec.source, DiskSource) and spec.source.lock is not None
    name = check_name(spec.name) if spec.name else new_name()
    directory = claim_vm_dir(env, name, kept=kept, installer=installer)
    if spec.detach:
        return start_detached(directory, lambda: supervise(spec, env, qemu, directory))
    return supervise(spec, env, qemu, directory)


def require_devices(machine: MachineOptions, *, disk: bool) -> None:
    """What the machine's firmware and TPM need on this host, checked before
    anything is made for it (a kept VM's disk too)."""
    if disk:
        require_ovmf(machine.firmware_choice)
    if machine.tpm:
        require_swtpm()


def supervise(spec: RunSpec, env: Environment, qemu: str, directory: Path) -> int:
    with ExitStack() as stack:
        vm = stack.enter_context(supervise_vm(directory, spec.title, detached=spec.detach))
        progress = stack.enter_context(start_progress(spec.machine.console or spec.keeps_running))
        match spec.source:
            case DiskSource() as source:
                if source.lock:
                    assert spec.name, "a VM that keeps its state has a name"
                    stack.enter_context(hold_lock(source.lock, already_running(spec.name)))
                prepared = prepare_disk(spec, source, env, qemu, directory)
            case ImageSource(image):
                prepared = prepare_image(
                    spec, image, env, qemu, vm=vm, progress=progress, stack=stack
                )
        prepared = provide(spec, prepared, vm.directory, stack)
        firmware = spec.machine.firmware_choice
        vm.update(
            ssh_key=str(prepared.login.key),
            publish=tuple(str(p) for p in spec.publish),
            binds=tuple(str(b) for b in spec.binds),
            firmware=firmware.value if isinstance(prepared.boot, FirmwareBoot) else "",
            tpm=prepared.tpm_state is not None,
        )
        warm = None
        if may_warm(spec, env) and isinstance(prepared.boot, KernelBoot) and not prepared.disks:
            versions = program_versions(qemu, find_virtiofsd() or Path("virtiofsd"), prepared.accel)
            if spec.machine.provision:
                # The saved guest read these when it booted.
                versions["provision"] = spec.machine.provision.digest()
            if prepared.has_ports:
                # The saved guest runs this unit's script: a state saved
                # with another script would not understand the host.
                versions["serial unit"] = serial_exec.guest_digest()
            machine = vm_spec(spec, prepared, Path("/vm"), 0)
            key = snapshot_key(prepared.image_id, machine, versions)
            warm = Warm(key, versions, prepared.image_id, eager=spec.warm is WarmStarts.ALWAYS)
        cold_attempts = 0
        # Ends: a failed restore turns restores off, a failed save turns
        # warm starts off, and cold boots are tried BOOT_ATTEMPTS times.
        for attempt in itertools.count(1):
            prepared = prepared.retaken()
            attempt_dir = directory / f"boot-{attempt}"
            attempt_dir.mkdir()
            with choose_start(env, Start(prepared.login), warm, attempt_dir) as start:
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


def may_warm(spec: RunSpec, env: Environment) -> bool:
    """Whether saved states may serve `spec`'s image runs: warm starts not
    turned off, a /cache kept between runs, and no disk attached (a disk
    changes under a saved state: such runs always boot), and no TPM."""
    return (
        spec.warm is not WarmStarts.NEVER
        and env.cache_kept
        and not (spec.disks or spec.machine.provision.adds_disks)
        # A TPM's seeds are its machine's own: restored from one state,
        # every run would have the same TPM, and what one sealed the others
        # could unseal.
        and not spec.machine.tpm
    )


def runs_over_serial(spec: RunSpec, prepared: Prepared, start: Start) -> bool:
    """Whether the command goes over virtio-serial: always without sshd (or
    when asked); else only from a restored guest saved with bootc-box's
    unit waiting, for a command that needs no login: no SSH handshake and
    no new identity to give, the most of a warm run under TCG."""
    if prepared.transport is Transport.SERIAL:
        return True
    saved_waiting = prepared.agent and start.restore is not None and start.restore.agent
    return saved_waiting and spec.needs_no_login


def prepare_image(
    spec: RunSpec,
    image: str,
    env: Environment,
    qemu: str,
    *,
    vm: VmEntry,
    progress: Progress,
    stack: ExitStack,
) -> Prepared:
    """The image pulled (if need be) and mounted (on `stack`), its boot files
    found and held, the accelerator chosen, the login made."""
    pulled = [""]  # podman's last line: which layer it copies
    progress.begin("pull", lambda: pulled[-1])
    image_id = resolve_image(parse_image_ref(image), env, spec.pull, pulled.append)
    vm.update(image_id=image_id)
    progress.begin("mount")
    root = stack.enter_context(mount_image(image_id, env))
    progress.begin("boot files")
    lease = stack.enter_context(BootFilesLease(env, image_id, root, image))
    files = lease.take()
    transport = choose_transport(spec.exec_transport, root, image, spec.needs_login)
    agent = wants_agent(transport, root, may_save=may_warm(spec, env))
    unit = gets_unit(transport, agent)
    kargs = (
        *files.kargs,
        *bind_kargs(spec.binds),
        *image_kargs(root, image),
        *((serial_exec.KARG,) if unit else ()),
        *spec.machine.kargs,
    )
    boot = KernelBoot(files.kernel, files.initramfs, Path("rootfs.sock"), kargs, files.kver)
    accel = choose_accel(spec.machine.accel, qemu, boot, env)
    login = new_login(vm.directory, spec.ssh_key)
    exec_credentials = guest_credentials(vm.directory) if unit else ()
    return Prepared(
        login, qemu, accel, boot, image_id, root, lease, transport, exec_credentials, agent,
        tpm_state=vm.directory / TPM_STATE if spec.machine.tpm else None,
    )  # fmt: skip


def prepare_disk(
    spec: RunSpec, source: DiskSource, env: Environment, qemu: str, directory: Path
) -> Prepared:
    """UEFI firmware with the VM's own variable store, the accelerator, the
    login, and the TPM's state: the VM's own when it keeps its state."""
    ovmf = require_ovmf(spec.machine.firmware_choice)
    firmware = vm_firmware(ovmf, directory, source.efi_vars)
    boot = FirmwareBoot(firmware, source.disk, (*bind_kargs(spec.binds), *spec.machine.kargs))
    accel = choose_accel(spec.machine.accel, qemu, boot, env)
    login = new_login(directory, spec.ssh_key, forget_old_keys=True)
    tpm_state = (source.tpm_state or directory / TPM_STATE) if spec.machine.tpm else None
    return Prepared(login, qemu, accel, boot, tpm_state=tpm_state)


def provide(spec: RunSpec, prepared: Prepared, directory: Path, stack: ExitStack) -> Prepared:
    """`prepared` with what the user provisions (provision.py): its
    credentials written as files, and its disks, swap made for this run."""
    provision = spec.machine.provision
    check_disk_files_exist(provision.disk_files)
    disks = (*spec.disks, *provision.disk_files)
    if provision.swap_bytes:
        scratch = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bootc-box-swap-", dir=scratch_root())
        )
        disks += (make_swap(Path(scratch, "swap.raw"), provision.swap_bytes),)
    credentials = provision.guest_credentials()
    files = write_credentials(directory / "provision", credentials) if credentials else ()
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    if provision.ignition:
        fw_cfg = ((IGNITION_FW_CFG, write_private(directory / "config.ign", provision.ignition)),)
    if provision.cloud_init:
        disks += (make_seed(directory / "cloud-init", provision.cloud_init),)
    return dataclasses.replace(prepared, provision_credentials=files, disks=disks, fw_cfg=fw_cfg)


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
        spec,
        prepared,
        workdir,
        free_port(),
        credentials=start.login.credentials,
        incoming=restore,
        prealloc=bool(start.save),
    )
    if restore:
        log.info("Restoring %s from its saved state", spec.title)
    else:
        boot = machine_spec.boot.describe()
        log.info("Booting %s (%s, %s)", spec.title, boot, prepared.accel.name)
    console_log = machine_spec.console_log
    progress.begin("restore" if restore else "boot", lambda: last_line(console_log))
    following = spec.machine.console or spec.keeps_running
    with (
        # Made while QEMU starts, if the guest will need them: ~0.3 s that a
        # restore would otherwise wait.
        ThreadPoolExecutor(1) as making,
        # Outside the machine, so that its power-off is followed too.
        start_console_follower(console_log, sys.stderr.buffer)
        if following
        else nullcontext() as follower,
    ):
        fresh = start.login.key == prepared.login.key
        serial = runs_over_serial(spec, prepared, start)
        host_keys = None if fresh or serial else making.submit(new_host_keys)
        with (
            start_machine(
                machine_spec,
                file_servers(spec, prepared, machine_spec, workdir),
                prepared.qemu,
                workdir / "qemu.log",
                # A disk keeps what the guest writes, so it always ends with a
                # power-off, even after a command: stopping QEMU outright would
                # lose what the guest still holds in its page cache.
                graceful=machine_spec.boot.keeps_writes,
                grace=spec.stop_timeout,
                console_copies=(workdir.parent / SUPERVISOR_LOG,),
            ) as machine,
            ExitStack() as held,
        ):
            if prepared.boot_lease:
                prepared.boot_lease.release()  # QEMU has read them
            vm.update(
                state=VmState.BOOTING, ssh_port=machine_spec.network.ssh_port, start=start.kind
            )
            # Connected for as long as QEMU runs: the guest's unit reads a
            # port whose host end is closed as its end.
            session = (
                held.enter_context(start_session(machine.spec.ports))
                if prepared.has_ports
                else None
            )
            if serial:
                assert session is not None
                return run_over_serial(spec, prepared, start, machine, session, progress=progress)
            # The command goes through the login that made the guest its
            # own: one SSH handshake instead of two.
            connection = None if spec.keeps_running else held
            up = come_up(
                spec,
                start,
                machine,
                host_keys.result if host_keys else None,
                key=prepared.login.key,
                image_id=prepared.image_id,
                progress=progress,
                connection=connection,
                agent=session,
            )
            log.info("%s", progress.done(start.kind))
            vm.update(state=VmState.RUNNING, ssh_host_key=up.target.host_key or "")
            if connection is not None:
                if spec.tty and follower:
                    follower.stop()  # an interactive shell and the console would interleave
                return connect(up.target, spec.command, tty=spec.tty)
            # From here a stop is a power-off: the guest gets its ACPI power
            # button and a few seconds before QEMU is stopped.
            machine.graceful = True
            log.info("VM %s is running; stop it with bootc-box stop or podman stop", vm.record.name)
            return stay_up(spec, machine, vm, up)


def run_over_serial(
    spec: RunSpec,
    prepared: Prepared,
    start: Start,
    machine: Machine,
    session: Session,
    *,
    progress: Progress,
) -> int:
    """Bring the guest up to where it waits for its command, then run the
    command in it over virtio-serial (serial_exec.py)."""
    come_up_serial(spec, start, machine, session, image_id=prepared.image_id, progress=progress)
    log.info("%s", progress.done(start.kind))
    if prepared.agent:
        log.info("Running the command over virtio-serial: it needs no login (no terminal, no -i)")
    try:
        return run_serial_command(
            session, spec.command, machine, out=sys.stdout.buffer, err=sys.stderr.buffer
        )
    except CommandUnstarted as e:
        if start.restore:
            raise RestoreFailed(e.message) from e
        raise
