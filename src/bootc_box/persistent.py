"""VMs that keep their state (`run --persistent --name NAME IMAGE`, `start`):
the image is installed once, as to-disk would (the cached base disk), and
each VM gets its own qcow2 overlay on it and its own UEFI variable store
under /cache/vms/NAME (see cache-layout.md). Stopping such a VM keeps them;
`start` or the same `run` line boots them again; `rm` deletes them."""

import dataclasses
import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootc_box.binds import parse_bind
from bootc_box.cache_entries import cache_dir
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.locks import hold_lock
from bootc_box.processes import last_line_of
from bootc_box.publish import parse_publish
from bootc_box.qemu import Disk
from bootc_box.run import RunSpec, already_running, run_run
from bootc_box.todisk import ToDiskSpec, disk_options, prepare_host, with_cached_disk
from bootc_box.vms import check_name, current_state, read_record, vms_dir

log = logging.getLogger(__name__)

CONFIG = "vm.json"
OVERLAY = "disk.qcow2"
EFI_VARS = "efivars.fd"
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


def persistent_root(env: Environment) -> Path:
    return cache_dir(env, "vms")


def find_persistent(env: Environment, name: str) -> PersistentVm | None:
    try:
        data = json.loads((persistent_root(env) / name / CONFIG).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise BootcBoxError(
            f"the state of VM {name} is unreadable ({e})", f"remove it with bootc-box rm {name}"
        ) from e
    for key in ("kargs", "publish", "binds"):
        data[key] = tuple(data[key])
    return PersistentVm(**data)


def persistent_names(env: Environment) -> list[str]:
    root = persistent_root(env)
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).exists()) if root.is_dir() else []


def used_disk_keys(env: Environment) -> set[str]:
    """The cached disks that VMs' overlays are built on: never pruned."""
    return {vm.disk_key for n in persistent_names(env) if (vm := find_persistent(env, n))}


def create_overlay(base: Path, overlay: Path) -> None:
    made = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise BootcBoxError(f"cannot create the VM's disk: {last_line_of(made.stderr)}")


def run_persistent(spec: RunSpec) -> int:
    """Boot the VM NAME from its own disk, made first from IMAGE when it has none."""
    if not spec.name:
        raise BootcBoxError(
            "--persistent needs --name NAME", "name the VM to keep, e.g. --name web"
        )
    name = check_name(spec.name)
    env = probe_environment()
    if not env.cache_kept:
        raise BootcBoxError(
            "--persistent keeps the VM's disk in /cache, and /cache is not a volume here",
            "add -v bootc-box:/cache to the podman run line",
        )
    vm = find_persistent(env, name)
    if vm is None:
        vm = create_persistent(env, spec)
    elif spec.image not in (vm.image, vm.image_id):
        raise BootcBoxError(
            f"VM {name} keeps its state from {vm.image}, not {spec.image}",
            f"start it with bootc-box start {name}, or remove it with bootc-box rm {name}",
        )
    return boot_persistent(env, vm, spec)


def create_persistent(env: Environment, spec: RunSpec) -> PersistentVm:
    """The VM's overlay on the image's cached base disk (installed first when
    it is not cached) and its state, put in place whole."""
    assert spec.name
    installer = ToDiskSpec(
        image=spec.image, output=Path("-"), pull=spec.pull, memory_mib=spec.memory_mib,
        cpus=spec.cpus, accel=spec.accel, console=spec.console, timeout=spec.timeout,
    )  # fmt: skip
    qemu = prepare_host(env, installer)
    options = disk_options(installer, env)
    root = persistent_root(env)
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{spec.name}.partial-", dir=root))
    try:
        with_cached_disk(installer, options, env, qemu,
                         lambda base: create_overlay(base, partial / OVERLAY))  # fmt: skip
        vm = PersistentVm(
            name=spec.name,
            image=spec.image,
            image_id=options.image_id,
            disk_key=options.key,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            kargs=spec.kargs,
            publish=tuple(str(p) for p in spec.publish),
            binds=tuple(str(b) for b in spec.binds),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        (partial / CONFIG).write_text(json.dumps(asdict(vm), indent=2) + "\n")
        try:
            partial.rename(root / spec.name)
        except OSError as e:  # another run made it meanwhile
            raise BootcBoxError(f"VM {spec.name} was created by another run meanwhile",
                                f"start it with bootc-box start {spec.name}") from e  # fmt: skip
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("Created VM %s, which keeps its state, from %s", spec.name, spec.image)
    return vm


def boot_persistent(env: Environment, vm: PersistentVm, spec: RunSpec) -> int:
    directory = persistent_root(env) / vm.name
    forget_stopped(env, vm.name)
    return run_run(
        dataclasses.replace(
            spec,
            image=vm.image,
            disk=Disk(directory / OVERLAY),
            efi_vars=directory / EFI_VARS,
            persistent_lock=directory / LOCK,
            label=vm.image,
        )
    )


def forget_stopped(env: Environment, name: str) -> None:
    """A record this box kept of the VM's last run, once it has ended, so
    that the name can be claimed again."""
    directory = vms_dir(env) / name
    record = read_record(directory)
    if record is not None and not current_state(record).live:
        shutil.rmtree(directory)
    elif record is not None:
        raise already_running(name)


def run_start(names: tuple[str, ...], detach: bool = True) -> int:
    """`start NAME...`: boot VMs that keep their state again, detached."""
    env = probe_environment()
    for name in names:
        vm = find_persistent(env, check_name(name))
        if vm is None:
            raise BootcBoxError(
                f"no VM named {name} keeps its state here",
                "only VMs made with run --persistent --name NAME start again; see bootc-box list",
            )
        spec = RunSpec(
            image=vm.image, name=vm.name, detach=detach, memory_mib=vm.memory_mib, cpus=vm.cpus,
            kargs=vm.kargs, publish=tuple(parse_publish(p) for p in vm.publish),
            binds=tuple(parse_bind(b) for b in vm.binds), persistent=True,
        )  # fmt: skip
        status = boot_persistent(env, vm, spec)
        if status != 0:
            return status
    return 0


def remove_persistent(env: Environment, name: str) -> bool:
    """Delete the VM's disk and state; False when it has none."""
    directory = persistent_root(env) / name
    if not (directory / CONFIG).exists():
        return False
    with hold_lock(directory / LOCK, already_running(name)):
        shutil.rmtree(directory)
    return True
