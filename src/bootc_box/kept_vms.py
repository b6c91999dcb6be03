"""VMs that keep their state, as they lie under /cache/vms/NAME (see
cache-layout.md): each one's record (vm.json), its qcow2 overlay on a
cached base disk, its UEFI variable store and its lock. Reading, finding,
making room for and removing them; booting them is persistent.py's."""

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootc_box import cache_entries
from bootc_box.binds import parse_bind
from bootc_box.cache_entries import Entries, partial_key, read_regular
from bootc_box.credentials import write_private
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import FirmwareChoice, parse_firmware
from bootc_box.locks import hold_lock, is_held
from bootc_box.machine_options import MachineOptions
from bootc_box.provision import Provision, provision_from_json, provision_json
from bootc_box.publish import parse_publish
from bootc_box.qemu import parse_memory
from bootc_box.records import from_json
from bootc_box.vms import (
    KEPT_CONFIG,
    already_running,
    check_name,
    current_state,
    is_vm_name,
    kept_vm_dir,
    kept_vms_dir,
    read_record,
    vm_dir,
)

log = logging.getLogger(__name__)

CONFIG = KEPT_CONFIG
PROVISION = "provision.json"
OVERLAY = "disk.qcow2"
LOCK = "lock"


@dataclass(frozen=True)
class KeptVm:
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
    # Older records neither: their VMs were made with plain UEFI and no TPM.
    firmware: str = FirmwareChoice.UEFI.value
    tpm: bool = False

    @property
    def machine(self) -> MachineOptions:
        """The machine it was made with; the rest of the options are each run's."""
        return MachineOptions(
            memory_mib=self.memory_mib,
            cpus=self.cpus,
            kargs=self.kargs,
            firmware=parse_firmware(self.firmware),
            tpm=self.tpm,
        )


def config_from_json(data: Any, name: str) -> KeptVm:
    """The config of VM `name`, checked as `run` checked the command line it
    came from: whoever can write the cache can write it too. ValueError,
    TypeError or BootcBoxError say what is wrong."""
    vm = from_json(KeptVm, data)
    if check_name(vm.name) != name:
        raise ValueError(f"it names VM {vm.name}")
    parse_memory(str(vm.memory_mib))
    parse_firmware(vm.firmware)
    if vm.cpus < 1:
        raise ValueError(f"cpus {vm.cpus} is not 1 or more")
    for publish in vm.publish:
        parse_publish(publish)
    for bind in vm.binds:
        parse_bind(bind)
    return vm


def read_config(directory: Path) -> KeptVm:
    """The config of the VM `directory` holds (or is being made in); a
    one-line error when it cannot be read, or not trusted to be whole."""
    name = partial_key(directory.name) or directory.name
    try:
        if directory.is_symlink():
            raise ValueError("it is a symbolic link")
        return config_from_json(json.loads(read_regular(directory / CONFIG)), name)
    except UNREADABLE as e:
        raise unreadable(f"the state of VM {name}", name, e) from e


# What reading a kept VM's files that fail their checks raises.
UNREADABLE = (OSError, ValueError, KeyError, TypeError, BootcBoxError)


def unreadable(what: str, name: str, e: Exception) -> BootcBoxError:
    problem = e.message if isinstance(e, BootcBoxError) else str(e)
    return BootcBoxError(f"{what} is unreadable ({problem})", f"remove it with bootc-box rm {name}")


def write_provision(directory: Path, provision: Provision) -> None:
    """What the VM's guest is given at each boot, for `start`: its own file,
    which only its owner can read (credentials may be secrets)."""
    if provision:
        write_private(directory / PROVISION, provision_json(provision))


def read_provision(env: Environment, name: str) -> Provision:
    path = kept_vm_dir(env, name) / PROVISION
    if not path.exists() and not path.is_symlink():
        return Provision()
    try:
        return provision_from_json(read_regular(path))
    except UNREADABLE as e:
        raise unreadable(f"what VM {name} is given at boot", name, e) from e


def find_kept_vm(env: Environment, name: str) -> KeptVm | None:
    directory = kept_vm_dir(env, name)
    return read_config(directory) if (directory / CONFIG).exists() else None


def kept_vm_names(env: Environment) -> list[str]:
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


def is_kept(env: Environment, name: str) -> bool:
    return (kept_vm_dir(env, name) / CONFIG).exists()


def remove_kept_vm(env: Environment, name: str) -> bool:
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
