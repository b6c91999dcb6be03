"""The VMs this box (or host) runs: list, inspect, ssh, logs, stop, rm."""

import enum
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from bootc_box.cache import remove_stale_mounts
from bootc_box.console import LogReader, rotated
from bootc_box.detach import SUPERVISOR_LOG
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kept_vms import (
    find_kept_vm,
    is_kept,
    kept_vm_names,
    remove_kept_vm,
    running_elsewhere,
)
from bootc_box.options import GLOBAL_VALUE_OPTIONS, first_operand
from bootc_box.ssh import SshTarget, connect, ssh_config
from bootc_box.table import format_table
from bootc_box.terminal import PrintableWriter
from bootc_box.vms import (
    RunRecord,
    VmState,
    being_made_here,
    current_state,
    find_vm,
    list_vms,
    read_record,
    vm_dir,
    write_record,
)

log = logging.getLogger(__name__)


def describe(record: RunRecord) -> dict[str, Any]:
    """What `inspect --json` prints: enough for ssh, tmt and testinfra."""
    return {
        "name": record.name,
        "state": current_state(record).value,
        "image": record.image,
        "image_id": record.image_id,
        # "cold" (booted) or "restored" (from a saved state: see Warm starts)
        "start": record.start,
        "ssh": {
            "host": record.ssh_host,
            "port": record.ssh_port,
            "user": record.ssh_user,
            "key": record.ssh_key,
            # The only host key to accept ("ssh-ed25519 BASE64"); "" until it answered.
            "host_key": record.ssh_host_key,
        },
        "publish": list(record.publish),
        "binds": list(record.binds),
        # "uefi" or "uefi-secure" for a disk; null: the image's kernel, booted directly.
        "firmware": record.firmware or None,
        "tpm": record.tpm,
        "detached": record.detached,
        "supervisor_pid": record.supervisor_pid,
        "created": record.created,
        "error": record.error,
    }


def reap_dead(env: Environment) -> list[RunRecord]:
    """Every VM's record, with supervisors that died unannounced marked dead
    and what they left in the image store removed."""
    records, dead = [], 0
    for directory, found in list_vms(env):
        if found is None:
            continue
        record = found
        if current_state(found) is VmState.DEAD and found.state is not VmState.DEAD:
            record = replace(found, state=VmState.DEAD)
            write_record(directory, record)
            dead += 1
        records.append(record)
    if dead:
        remove_stale_mounts(env)
    return records


def kept_records(env: Environment, records: list[RunRecord]) -> list[RunRecord]:
    """VMs that keep their state and are not running here, as stopped records."""
    here = {r.name for r in records}
    kept = []
    for name in kept_vm_names(env):
        if name in here or running_elsewhere(env, name):  # listed in the box that runs it
            continue
        try:
            kept.append(find_kept_vm(env, name))
        except BootcBoxError as e:
            log.warning("%s", e.message)
    return [
        RunRecord(
            name=vm.name,
            image=vm.image,
            image_id=vm.image_id,
            state=VmState.STOPPED,
            supervisor_pid=0,
            supervisor_started=0.0,
            detached=True,
            created=vm.created,
            firmware=vm.firmware,
            tpm=vm.tpm,
        )
        for vm in kept
        if vm is not None
    ]


def run_list(env: Environment, as_json: bool) -> int:
    records = reap_dead(env)
    records += kept_records(env, records)
    if as_json:
        print(json.dumps([describe(r) for r in records], indent=2))
        return 0
    rows = [("NAME", "STATE", "IMAGE", "SSH", "CREATED")]
    rows += [
        (r.name, r.state.value, r.image, f"{r.ssh_host}:{r.ssh_port}" if r.ssh_port else "-",
         r.created)
        for r in records
    ]  # fmt: skip
    print(format_table(rows))
    return 0


def run_inspect(env: Environment, name: str | None, as_json: bool) -> int:
    _, record = find_vm(env, name)
    info = describe(record)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        ssh = info.pop("ssh")
        for key, value in {**info, **{f"ssh_{k}": v for k, v in ssh.items()}}.items():
            print(f"{key}: {value}")
    return 0


def wait_for_running(directory: Path, record: RunRecord, timeout: float) -> RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        state = current_state(record)
        if state is VmState.RUNNING:
            return record
        if not state.live:
            raise BootcBoxError(
                f"VM {record.name} is {state.value}"
                + (f": {record.error}" if record.error else ""),
                f"see bootc-box logs {record.name}, then start it again with bootc-box run",
            )
        if time.monotonic() > deadline:
            raise BootcBoxError(
                f"VM {record.name} did not finish booting within {timeout:.0f} s",
                f"see bootc-box logs {record.name}",
            )
        time.sleep(0.5)
        record = read_record(directory) or record


def starting_runs(env: Environment) -> set[int]:
    """`bootc-box run` processes here that supervise no VM yet: what `ssh`
    right after `podman run -d BOX run IMAGE` must wait for, instead of
    saying there is no VM."""
    supervisors = {r.supervisor_pid for _, r in list_vms(env) if r is not None}
    return (
        {
            process.info["pid"]
            for process in psutil.process_iter(["pid", "cmdline"])
            if is_run_command(process.info["cmdline"] or [])
        }
        - supervisors
        - {os.getpid()}
    )


def is_run_command(argv: list[str]) -> bool:
    """`python3 -m bootc_box [OPTIONS] run ...` or `.../bootc-box [OPTIONS] run ...`."""
    for at, word in enumerate(argv[:3]):
        if word == "bootc_box" or word.endswith("/bootc-box") or word == "bootc-box":
            return command_name(argv[at + 1 :]) == "run"
    return False


def command_name(args: list[str]) -> str | None:
    """The command bootc-box's arguments `args` name: the first word past
    the top-level options, their values and a `--` that ends them."""
    end = first_operand(args, set(GLOBAL_VALUE_OPTIONS))
    end += args[end : end + 1] == ["--"]
    return args[end] if end < len(args) else None


class Awaited(enum.Enum):
    """What a lookup that found no VM waits for."""

    STARTING = enum.auto()  # a run here that has no VM yet: seconds, waited for quietly
    MAKING = enum.auto()  # the VM named, being made here: minutes, so said once


def awaited(*, starting: bool, making: bool) -> Awaited | None:
    if making:
        return Awaited.MAKING
    return Awaited.STARTING if starting else None


def find_vm_when_started(
    env: Environment, name: str | None, timeout: float
) -> tuple[Path, RunRecord]:
    """find_vm, waiting while a `run` here is still starting up, or is
    making the VM named."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            return find_vm(env, name)
        except BootcBoxError:
            making = name is not None and being_made_here(env, name)
            waiting = awaited(starting=bool(starting_runs(env)), making=making)
            if waiting is None or time.monotonic() > deadline:
                raise
            if waiting is Awaited.MAKING and not said:
                log.info("VM %s is being made (its image installed to its own disk); "
                         "waiting for it", name)  # fmt: skip
                said = True
        time.sleep(0.2)


def ssh_target(record: RunRecord) -> SshTarget:
    return SshTarget(
        record.ssh_host, record.ssh_port, record.ssh_user, Path(record.ssh_key),
        record.ssh_host_key or None,
    )  # fmt: skip


def reach_vm(env: Environment, name: str | None, timeout: float) -> SshTarget:
    """How to log in to a VM, once it has started and finished booting."""
    directory, record = find_vm_when_started(env, name, timeout)
    return ssh_target(wait_for_running(directory, record, timeout))


def run_ssh(env: Environment, name: str | None, command: tuple[str, ...], timeout: float) -> int:
    """SSH into a VM, waiting for it to start and finish booting first."""
    target = reach_vm(env, name, timeout)
    return connect(target, command, tty=not command and sys.stdin.isatty())


def run_ssh_config(env: Environment, name: str | None) -> int:
    """An ssh_config stanza for VM NAME, or for every VM that has an SSH port."""
    if name is not None:
        records = [find_vm(env, name)[1]]
    else:
        records = [r for r in reap_dead(env) if current_state(r).live]
    # Once its guest answered: its host key is known, and pinned in the stanza.
    reachable = [r for r in records if r.ssh_port and r.ssh_host_key]
    if name is not None and not reachable:
        raise BootcBoxError(
            f"VM {name} has not answered SSH yet ({current_state(records[0]).value})",
            f"wait for it with bootc-box ssh {name} -- true",
        )
    if not reachable:
        raise BootcBoxError(
            "no VM here answers SSH yet",
            "start one with bootc-box run -d IMAGE, or wait with bootc-box ssh NAME -- true",
        )
    print("\n".join(ssh_config(r.name, ssh_target(r)) for r in reachable), end="")
    return 0


def vm_names(env: Environment) -> list[str]:
    """Every VM's name, for shell completion."""
    return sorted({r.name for _, r in list_vms(env) if r is not None} | {*kept_vm_names(env)})


def log_files(directory: Path) -> list[Path]:
    """A detached VM's supervisor log has its messages and console; a
    foreground VM's console is in its boot attempts' logs. Each after what
    was rotated out of it, if anything was."""
    supervisor = directory / SUPERVISOR_LOG
    logs = [supervisor] if supervisor.exists() else sorted(directory.glob("boot-*/console.log"))
    return [p for log in logs for p in (rotated(log), log) if p.exists()]


def run_logs(env: Environment, name: str | None, follow: bool) -> int:
    directory, record = find_vm(env, name)
    out = PrintableWriter(sys.stdout.buffer)  # the guest wrote most of it
    files = log_files(directory)
    for path in files[:-1]:
        out.write(path.read_bytes())
    if not files:
        return 0
    current = LogReader(files[-1])
    try:
        while True:
            out.write(current.read())
            if not follow or not current_state(read_record(directory) or record).live:
                out.write(current.read())
                out.finish()
                return 0
            time.sleep(0.2)
    finally:
        current.close()


def stop_vm(directory: Path, record: RunRecord, timeout: float) -> bool:
    """SIGTERM to the supervisor, which powers the VM off and cleans up;
    SIGKILL if it has not finished within `timeout`. True when it left
    its image mount behind: killed now, or dead before."""
    if not current_state(record).live:
        return current_state(record) is VmState.DEAD
    try:
        supervisor = psutil.Process(record.supervisor_pid)
        supervisor.send_signal(signal.SIGTERM)
        if wait_gone(supervisor, timeout):
            return False
        log.warning(
            "the supervisor of %s did not stop within %.0f s; killing it", record.name, timeout
        )
        supervisor.kill()
    except psutil.NoSuchProcess:
        return False
    wait_gone(supervisor, timeout)
    return True


def wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Whether `process` ended within `timeout`. A zombie has ended: a
    detached supervisor is nobody's child, and where PID 1 never reaps (a
    container whose PID 1 is `sleep infinity`) it stays a zombie for good,
    which psutil's wait() would wait out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def run_stop(env: Environment, names: tuple[str, ...], timeout: float) -> int:
    targets = [find_vm(env, n) for n in names or (None,)]
    left_mounts = False
    for directory, record in targets:
        left_mounts |= stop_vm(directory, record, timeout)
        print(record.name)
    if left_mounts:
        remove_stale_mounts(env)
    return 0


def run_rm(
    env: Environment, names: tuple[str, ...], force: bool, remove_all: bool, timeout: float
) -> int:
    kept_only: list[str] = []  # VMs that keep their state, not running here
    if remove_all:
        targets = [(d, r) for d, r in list_vms(env) if r is not None]
        kept_only = [r.name for r in kept_records(env, [r for _, r in targets])]
    elif names:
        targets = []
        for name in names:
            if vm_dir(env, name).exists() or not is_kept(env, name):
                targets.append(find_vm(env, name))
            else:
                kept_only.append(name)
    else:
        raise BootcBoxError("which VMs?", "name the VMs to remove, or pass --all")
    running = [r.name for _, r in targets if current_state(r).live]
    if running and not force:
        raise BootcBoxError(
            f"{', '.join(running)} still running", "stop them first, or pass --force"
        )
    left_mounts = False
    for directory, record in targets:
        left_mounts |= stop_vm(directory, record, timeout)
        shutil.rmtree(directory)
        remove_kept_vm(env, record.name)
        print(record.name)
    for name in kept_only:
        remove_kept_vm(env, name)
        print(name)
    if left_mounts:
        remove_stale_mounts(env)  # the mount a killed supervisor could not remove
    return 0
