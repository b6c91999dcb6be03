"""Each VM's state directory: its record, SSH key and logs. A record says
what the supervisor last wrote; /proc tells whether that supervisor still
lives, so a crashed one shows as dead instead of running forever."""

import enum
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bootc_box.cache_entries import cache_dir
from bootc_box.environment import Environment, runtime_dir
from bootc_box.errors import BootcBoxError
from bootc_box.locks import delete_if_unused, is_held, lock_file
from bootc_box.records import from_json, to_json
from bootc_box.signals import Terminated
from bootc_box.ssh import SOCKET_PATH_MAX

RECORD = "vm.json"
VM_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}"
_NAME = re.compile(VM_NAME)


class VmState(enum.Enum):
    STARTING = "starting"  # resolving, pulling, mounting the image
    BOOTING = "booting"  # QEMU runs; SSH does not answer yet
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    # What a live state means once its supervisor is gone without saying so
    # (SIGKILL, a crash); written by `list` when it finds one.
    DEAD = "dead"

    @property
    def live(self) -> bool:
        return self in (VmState.STARTING, VmState.BOOTING, VmState.RUNNING)


@dataclass(frozen=True)
class RunRecord:
    """A VM's run in this box, as its supervisor keeps it current in the
    runtime directory's vms/NAME/vm.json: what list, ssh and stop read.
    (A kept VM's own record, on the volume, is kept_vms.KeptVm.)"""

    name: str
    image: str
    state: VmState
    supervisor_pid: int
    # When it started, by the wall clock: what identified it before
    # supervisor_ticks, which records written then lack.
    supervisor_started: float
    detached: bool
    created: str
    image_id: str = ""
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 0
    ssh_user: str = "root"
    ssh_key: str = ""
    # The public host key its guest shows, once it answered: ssh accepts no other.
    ssh_host_key: str = ""
    publish: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()
    error: str = ""
    # How its guest came up: "cold" (booted) or "restored" (from a saved state).
    start: str = ""
    # With the pid, identifies the supervisor (pids are reused): its start
    # in clock ticks after boot, which no step of the wall clock moves.
    supervisor_ticks: int | None = None
    # Its UEFI firmware (uefi, uefi-secure), "" for an image's kernel booted
    # directly; whether it has a TPM.
    firmware: str = ""
    tpm: bool = False


def vms_dir(env: Environment) -> Path:
    """Per box, not on /cache: a VM's ports and processes only exist in the
    box (its network and PID namespace) that runs it. Natively, the user's
    runtime directory."""
    return runtime_dir(env) / "vms"


def kept_vms_dir(env: Environment) -> Path:
    """Where VMs that keep their state live (persistent.py): on the cache
    volume, shared by every box that mounts it."""
    return cache_dir(env, "vms")


# What makes a directory there a VM (persistent.CONFIG).
KEPT_CONFIG = "vm.json"


def is_vm_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    """`name`, once it is known to name a directory of its own: a name read
    from a record, or from a cache others write, may be `../../x`."""
    if not is_vm_name(name):
        raise BootcBoxError(
            f"invalid VM name {name!r}",
            "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return name


def vm_dir(env: Environment, name: str) -> Path:
    return vms_dir(env) / check_name(name)


def kept_vm_dir(env: Environment, name: str) -> Path:
    return kept_vms_dir(env) / check_name(name)


def new_name() -> str:
    return f"vm-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ProcStat:
    state: str  # R, S, D, Z (zombie), ...
    start_ticks: int


def parse_proc_stat(text: str) -> ProcStat:
    """Fields 3 and 22 of /proc/PID/stat (proc(5)), counted after the
    program's name, which may hold spaces and parentheses itself."""
    fields = text[text.rindex(")") + 1 :].split()
    return ProcStat(fields[0], int(fields[19]))


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None when it
    is gone, or has ended and waits to be reaped."""
    try:
        stat = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return None if stat.state in ("Z", "X") else stat.start_ticks


def this_process() -> tuple[int, float, int | None]:
    """Our pid, and when we started: by the wall clock, and in ticks."""
    me = psutil.Process()
    return me.pid, me.create_time(), start_ticks(me.pid)


def write_record(directory: Path, record: RunRecord) -> None:
    """Atomically: readers see the old record or the new one, never half."""
    partial = directory / f".{RECORD}.{os.getpid()}"
    partial.write_text(to_json(record))
    partial.replace(directory / RECORD)


def read_record(directory: Path) -> RunRecord | None:
    """The record of the VM `directory` is for; None when there is none, or
    it names another VM (its name is what `rm` deletes)."""
    try:
        record = from_json(RunRecord, json.loads((directory / RECORD).read_text()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return record if record.name == directory.name and is_vm_name(record.name) else None


def supervisor_alive(record: RunRecord) -> bool:
    if record.supervisor_ticks is not None:
        return start_ticks(record.supervisor_pid) == record.supervisor_ticks
    try:
        process = psutil.Process(record.supervisor_pid)
        alive: bool = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        return alive and abs(process.create_time() - record.supervisor_started) < 0.01
    except psutil.Error:
        return False


def current_state(record: RunRecord) -> VmState:
    if record.state.live and not supervisor_alive(record):
        return VmState.DEAD
    return record.state


class VmEntry:
    """A claimed state directory and the record its supervisor keeps current."""

    def __init__(self, directory: Path, record: RunRecord) -> None:
        self.directory = directory
        self.record = record
        write_record(directory, record)

    def update(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)
        write_record(self.directory, self.record)


# A VM's longest socket path below its directory (boot attempt, bind share).
LONGEST_SOCKET = "boot-9/bind99.sock"


def check_socket_room(directory: Path) -> None:
    longest = len(os.fsencode(directory / LONGEST_SOCKET))
    if longest > SOCKET_PATH_MAX:
        raise BootcBoxError(
            f"the VM's sockets under {directory} would be {longest} bytes long, "
            f"and a socket path holds at most {SOCKET_PATH_MAX}",
            "pick a shorter --name, or a shorter XDG_RUNTIME_DIR",
        )


# In the state directory of to-disk's installer VM: a step of that command,
# which no command given no VM name means, though it is one VM of the box.
INSTALLER_MARK = "installer"


def is_installer(directory: Path) -> bool:
    return (directory / INSTALLER_MARK).exists()


def already_running(name: str) -> BootcBoxError:
    return BootcBoxError(
        f"VM {name} is already running (here or in another box)",
        f"stop it first: bootc-box stop {name}",
    )


def claim_vm_dir(
    env: Environment, name: str, *, kept: bool = False, installer: bool = False
) -> Path:
    """A new state directory for VM `name`, or an error if the name is taken
    (also by a VM that keeps its state, unless this is that VM's run).
    `installer`: marked as to-disk's installer, before it has a record."""
    base = vms_dir(env)
    directory = vm_dir(env, name)
    if not kept and (kept_vm_dir(env, name) / KEPT_CONFIG).exists():
        raise BootcBoxError(
            f"the name {name} is used by a VM that keeps its state",
            f"pick another --name, or boot that VM with bootc-box start {name}",
        )
    check_socket_room(directory)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        raise BootcBoxError(
            f"the name {name} is already used by a VM",
            f"pick another --name, or remove it with bootc-box rm --force {name}",
        ) from None
    if installer:
        (directory / INSTALLER_MARK).touch()
    return directory


@contextmanager
def supervise_vm(directory: Path, image: str, *, detached: bool) -> Iterator[VmEntry]:
    """The record of the VM this process supervises, kept current. A
    foreground VM's directory goes when it ends; a detached VM's stays, marked
    stopped or failed, until `bootc-box rm`."""
    pid, started, ticks = this_process()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    record = RunRecord(
        directory.name, image, VmState.STARTING, pid, started, detached, created,
        supervisor_ticks=ticks,
    )  # fmt: skip
    try:
        entry = VmEntry(directory, record)
        try:
            yield entry
        except (Terminated, KeyboardInterrupt):
            entry.update(state=VmState.STOPPED)
            raise
        except BaseException as e:
            entry.update(state=VmState.FAILED, error=str(e) or type(e).__name__)
            raise
        entry.update(state=VmState.STOPPED)
    finally:
        if not detached:
            shutil.rmtree(directory, ignore_errors=True)


def making_lock(env: Environment, name: str) -> Path:
    return vms_dir(env) / f".{check_name(name)}.making.lock"


@contextmanager
def making_here(env: Environment, name: str) -> Iterator[None]:
    """Say that VM `name` is being made here (`run --persistent` installing
    its image first, for minutes), so that `ssh NAME` waits for it rather
    than find nothing: a lock, held shared by each run making it, which the
    kernel drops if the run dies."""
    path = making_lock(env, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = lock_file(path, fcntl.LOCK_SH, timeout=5.0)  # only ever held exclusively to look
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
            delete_if_unused(path)


def being_made_here(env: Environment, name: str) -> bool:
    return is_held(making_lock(env, name))


def list_vms(env: Environment) -> list[tuple[Path, RunRecord | None]]:
    base = vms_dir(env)
    if not base.is_dir():
        return []
    return [(d, read_record(d)) for d in sorted(base.iterdir()) if d.is_dir()]


def find_vm(env: Environment, name: str | None) -> tuple[Path, RunRecord]:
    """The VM called `name`, or the only one when no name is given."""
    if name is not None:
        directory = vm_dir(env, name)
        record = read_record(directory)
        if record is None:
            raise BootcBoxError(f"no VM named {name}", "see bootc-box list")
        return directory, record
    found = [(d, r, is_installer(d)) for d, r in list_vms(env) if r is not None]
    return only_vm(found)


def only_vm(found: list[tuple[Path, RunRecord, bool]]) -> tuple[Path, RunRecord]:
    """The one VM of `found` (directory, record, whether it is to-disk's
    installer) that a command given no name means: installers are there only
    by name, so that `ssh` during a to-disk does not log in to one."""
    vms = [(d, r) for d, r, installer in found if not installer]
    if len(vms) == 1:
        return vms[0]
    if len(vms) > 1:
        names = ", ".join(r.name for _, r in vms)
        raise BootcBoxError(f"{len(vms)} VMs here ({names})", "name the one you mean")
    installers = ", ".join(r.name for _, r, installer in found if installer)
    if installers:
        raise BootcBoxError(
            f"no VMs here but the installer of a to-disk ({installers})",
            "start one with bootc-box run -d IMAGE, or name the installer to reach it",
        )
    raise BootcBoxError("no VMs here", "start one with bootc-box run -d IMAGE")
