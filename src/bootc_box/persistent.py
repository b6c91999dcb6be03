"""VMs that keep their state (`run --persistent --name NAME IMAGE`, `start`):
the image is installed once, as to-disk would (the cached base disk), and
each VM gets its own qcow2 overlay on it and its own UEFI variable store
under /cache/vms/NAME (see cache-layout.md). Stopping such a VM keeps them;
`start` or the same `run` line boots them again; `rm` deletes them."""

import dataclasses
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bootc_box import cache_entries
from bootc_box.binds import parse_bind
from bootc_box.boot import Disk
from bootc_box.cache_entries import Entries, partial_key, read_regular
from bootc_box.disk_cache import recorded_disk
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import EFI_VARS
from bootc_box.launch import run_vm
from bootc_box.locks import hold_lock, is_held
from bootc_box.machine_options import MachineOptions
from bootc_box.publish import parse_publish
from bootc_box.qemu import parse_memory, qemu_img_create, qemu_img_create_argv
from bootc_box.run_spec import DiskSource, ImageSource, RunSpec
from bootc_box.todisk import InstallSpec, disk_options, prepare_host, with_cached_disk
from bootc_box.vms import (
    KEPT_CONFIG,
    already_running,
    check_name,
    current_state,
    is_vm_name,
    kept_vm_dir,
    kept_vms_dir,
    making_here,
    read_record,
    vm_dir,
)

log = logging.getLogger(__name__)

CONFIG = KEPT_CONFIG
OVERLAY = "disk.qcow2"
LOCK = "lock"


@dataclass(frozen=True)
class PersistentVm:
    """What `start` needs to boot the VM again as `run` first did."""

    name: str
    image: str
    image_id: str
    disk_key: str  # the cached base disk under /cache/disks
    memory_mib: int
    cpus: int
    kargs: tuple[str, ...]
    publish: tuple[str, ...]
    binds: tuple[str, ...]
    created: str
    # Older VMs' records have no such key: they were made before the guest
    # could be kept from the host's loopback, and now are.
    allow_host_loopback: bool = False

    @property
    def machine(self) -> MachineOptions:
        """The machine it was made with; the rest of the options are each run's."""
        return MachineOptions(memory_mib=self.memory_mib, cpus=self.cpus, kargs=self.kargs)


def type_problem(vm: PersistentVm) -> str | None:
    for field in dataclasses.fields(vm):
        value = getattr(vm, field.name)
        if field.type is str and not isinstance(value, str):
            return f"{field.name} is not a string"
        if field.type is int and type(value) is not int:
            return f"{field.name} is not a number"
        if field.type is bool and type(value) is not bool:
            return f"{field.name} is not true or false"
        if field.type == tuple[str, ...] and not (
            isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        ):
            return f"{field.name} is not a list of strings"
    return None


def config_from_json(data: Any, name: str) -> PersistentVm:
    """The config of VM `name`, checked as `run` checked the command line it
    came from: whoever can write the cache can write it too. ValueError,
    TypeError or BootcBoxError say what is wrong."""
    lists = {k: tuple(v) for k in ("kargs", "publish", "binds") if isinstance(v := data[k], list)}
    vm = PersistentVm(**{**data, **lists})
    problem = type_problem(vm)
    if problem is not None:
        raise TypeError(problem)
    if check_name(vm.name) != name:
        raise ValueError(f"it names VM {vm.name}")
    parse_memory(str(vm.memory_mib))
    if vm.cpus < 1:
        raise ValueError(f"cpus {vm.cpus} is not 1 or more")
    for publish in vm.publish:
        parse_publish(publish)
    for bind in vm.binds:
        parse_bind(bind)
    return vm


def read_config(directory: Path) -> PersistentVm:
    """The config of the VM `directory` holds (or is being made in); a
    one-line error when it cannot be read, or not trusted to be whole."""
    name = partial_key(directory.name) or directory.name
    try:
        if directory.is_symlink():
            raise ValueError("it is a symbolic link")
        return config_from_json(json.loads(read_regular(directory / CONFIG)), name)
    except (OSError, ValueError, KeyError, TypeError, BootcBoxError) as e:
        problem = e.message if isinstance(e, BootcBoxError) else str(e)
        raise BootcBoxError(
            f"the state of VM {name} is unreadable ({problem})",
            f"remove it with bootc-box rm {name}",
        ) from e


def find_persistent(env: Environment, name: str) -> PersistentVm | None:
    directory = kept_vm_dir(env, name)
    return read_config(directory) if (directory / CONFIG).exists() else None


def persistent_names(env: Environment) -> list[str]:
    """The VMs that keep their state (not those being made: dot names)."""
    root = kept_vms_dir(env)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_vm_name(p.name) and (p / CONFIG).exists())


def running_elsewhere(env: Environment, name: str) -> bool:
    """Whether a run (in this box or another sharing the volume) holds the VM."""
    return is_held(kept_vm_dir(env, name) / LOCK)


def used_disk_keys(env: Environment) -> set[str] | None:
    """The cached disks that VMs' overlays are built on, which must stay;
    None when a VM's config cannot be read (then every disk must stay)."""
    root = kept_vms_dir(env)
    keys = set()
    for directory in root.iterdir() if root.is_dir() else ():
        if (directory / CONFIG).exists():  # VMs being made too
            try:
                keys.add(read_config(directory).disk_key)
            except BootcBoxError as e:
                log.warning("%s; keeping every cached disk", e.message)
                return None
    return keys


def run_persistent(spec: RunSpec) -> int:
    """Boot the VM NAME from its own disk, made first from IMAGE when it has none."""
    if not spec.name:
        raise BootcBoxError("--persistent needs --name NAME", "name the VM, e.g. --name web")
    name = check_name(spec.name)
    # Kept as given for `start`, which may run anywhere.
    spec = spec.absolute(Path.cwd())
    assert isinstance(spec.source, ImageSource), "a kept VM is made from an image"
    image = spec.source.image
    env = probe_environment()
    if not env.cache_kept:
        raise BootcBoxError(
            "--persistent keeps the VM's disk in /cache, and /cache is not a volume here",
            "add -v bootc-box:/cache to the podman run line",
        )
    vm = find_persistent(env, name)
    if vm is None:
        with making_here(env, name):
            vm = create_persistent(env, spec, image)
    elif image not in (vm.image, vm.image_id):
        raise BootcBoxError(
            f"VM {name} keeps its state from {vm.image}, not {image}",
            f"start it with bootc-box start {name}, or remove it with bootc-box rm {name}",
        )
    return boot_persistent(env, vm, spec)


def create_persistent(env: Environment, spec: RunSpec, image: str) -> PersistentVm:
    """The VM's overlay on the cached base disk of `image` (installed first
    when it is not cached) and its config, put in place whole while the base
    disk is held, so that no prune can take it in between."""
    assert spec.name
    # The installer's machine is this run's; the kargs are the VM's own.
    installer = InstallSpec(
        image, pull=spec.pull, machine=dataclasses.replace(spec.machine, kargs=())
    )
    prepare_host(env, installer)
    options = disk_options(installer, env)
    vm = PersistentVm(
        name=spec.name,
        image=image,
        image_id=options.image_id,
        disk_key=options.key,
        memory_mib=spec.machine.memory_mib,
        cpus=spec.machine.cpus,
        kargs=spec.machine.kargs,
        publish=tuple(str(p) for p in spec.publish),
        binds=tuple(str(b) for b in spec.binds),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        allow_host_loopback=spec.allow_host_loopback,
    )
    root = kept_vms_dir(env)

    def make(base: Path) -> None:
        with making_vm(root, vm.name) as partial:
            base_disk = Disk(base, options.format)
            qemu_img_create(qemu_img_create_argv(partial / OVERLAY, "qcow2", backing=base_disk))
            (partial / CONFIG).write_text(json.dumps(asdict(vm), indent=2) + "\n")
            try:
                partial.rename(root / vm.name)
            except OSError as e:
                raise BootcBoxError(f"VM {vm.name} was made by another run meanwhile",
                                    f"start it with bootc-box start {vm.name}") from e  # fmt: skip

    with_cached_disk(installer, options, env, make)
    log.info("Made VM %s, which keeps its state, from %s", vm.name, vm.image)
    return vm


# Held shared by every run making a VM, for as long as its partial
# directory exists; `cache prune` holds it exclusively to remove partials,
# which then can only be what a killed run left.
MAKING = ".making.lock"


@contextmanager
def making_vm(root: Path, name: str) -> Iterator[Path]:
    """A partial directory for the VM `name` in `root`, to fill and rename;
    what is left of it is removed when the block ends."""
    entries = Entries(root, creating="making")
    fd = entries.lock(root / MAKING, fcntl.LOCK_SH)
    if fd is None:
        raise BootcBoxError(
            f"another box kept {root / MAKING} locked for {cache_entries.LOCK_TIMEOUT:.0f} s",
            "wait for its cache prune to end, then rerun",
        )
    try:
        with entries.partial(name) as partial:
            yield partial
    finally:
        os.close(fd)


def prune_half_made(env: Environment) -> int:
    """Remove the partial VM directories of runs killed while making a VM
    (none while a run is making one); returns how many went."""
    root = kept_vms_dir(env)
    if not root.is_dir():
        return 0
    fd = Entries(root, creating="making").lock(root / MAKING, fcntl.LOCK_EX, timeout=0)
    if fd is None:
        return 0
    try:
        partials = list(root.glob(".*.partial-*"))
        for partial in partials:
            shutil.rmtree(partial, ignore_errors=True)
        return len(partials)
    finally:
        os.close(fd)


def boot_persistent(env: Environment, vm: PersistentVm, spec: RunSpec) -> int:
    directory = kept_vm_dir(env, vm.name)
    forget_stopped(env, vm.name)
    overlay = Disk(directory / OVERLAY, "qcow2", backing=recorded_disk(env, vm.disk_key))
    source = DiskSource(overlay, efi_vars=directory / EFI_VARS, lock=directory / LOCK)
    return run_vm(dataclasses.replace(spec, source=source, label=vm.image))


def forget_stopped(env: Environment, name: str) -> None:
    """A record this box kept of the VM's last run, once it has ended, so
    that the name can be claimed again."""
    directory = vm_dir(env, name)
    record = read_record(directory)
    if record is None:
        return
    if current_state(record).live:
        raise already_running(name)
    shutil.rmtree(directory)


def run_start(names: tuple[str, ...], *, detach: bool = True) -> int:
    """`start NAME...`: boot VMs that keep their state again."""
    env = probe_environment()
    for name in names:
        vm = find_persistent(env, check_name(name))
        if vm is None:
            raise BootcBoxError(
                f"no VM named {name} keeps its state here",
                "only VMs made with run --persistent --name NAME start again; see bootc-box list",
            )
        spec = RunSpec(
            ImageSource(vm.image), name=vm.name, detach=detach, machine=vm.machine,
            publish=tuple(parse_publish(p) for p in vm.publish),
            allow_host_loopback=vm.allow_host_loopback,
            binds=tuple(parse_bind(b) for b in vm.binds),
        )  # fmt: skip
        status = boot_persistent(env, vm, spec)
        if status != 0:
            return status
    return 0


def is_kept(env: Environment, name: str) -> bool:
    return (kept_vm_dir(env, name) / CONFIG).exists()


def remove_persistent(env: Environment, name: str) -> bool:
    """Delete the VM's disk and state; False when it has none."""
    directory = kept_vm_dir(env, name)
    if directory.is_symlink():  # planted: what it names is not ours to lock or delete
        directory.unlink()
        return True
    if not is_kept(env, name):
        return False
    with hold_lock(directory / LOCK, already_running(name)):
        shutil.rmtree(directory)
    return True
