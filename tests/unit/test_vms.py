import contextlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from bootc_box import manage
from bootc_box.cli import name_and_command
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.manage import Awaited, awaited, describe, find_vm_when_started, is_run_command
from bootc_box.records import from_json, to_json
from bootc_box.signals import Terminated
from bootc_box.vms import (
    ProcStat,
    RunRecord,
    VmState,
    being_made_here,
    check_name,
    claim_vm_dir,
    current_state,
    find_vm,
    making_here,
    parse_proc_stat,
    read_record,
    start_ticks,
    supervise_vm,
    supervisor_alive,
    this_process,
    vms_dir,
    write_record,
)

NATIVE = Environment(in_box=False)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "bootc-box/vms"


def record(**changes: object) -> RunRecord:
    pid, started, ticks = this_process()
    base = RunRecord("vm1", "img", VmState.RUNNING, pid, started, True, "2026-11-22T00:00:00+00:00",
                    supervisor_ticks=ticks)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def test_state_lives_in_the_runtime_dir(runtime_dir: Path) -> None:
    assert vms_dir(NATIVE) == runtime_dir


def test_a_record_survives_json() -> None:
    original = record(publish=("127.0.0.1:8080:80/tcp",), ssh_port=40022)
    assert from_json(RunRecord, json.loads(to_json(original))) == original


def test_a_live_state_with_a_dead_supervisor_is_dead() -> None:
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    assert current_state(record()) is VmState.RUNNING
    assert current_state(record(supervisor_pid=int(gone.stdout))) is VmState.DEAD
    # A reused pid: ours, but started at another time.
    assert current_state(record(supervisor_ticks=1)) is VmState.DEAD
    assert current_state(record(supervisor_ticks=1, state=VmState.STOPPED)) is VmState.STOPPED


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "a" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(BootcBoxError, match="invalid VM name"):
        check_name(name)


def test_a_name_is_claimed_once(runtime_dir: Path) -> None:
    directory = claim_vm_dir(NATIVE, "web")
    assert directory == runtime_dir / "web"
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    with pytest.raises(BootcBoxError) as err:
        claim_vm_dir(NATIVE, "web")
    assert str(err.value) == (
        "the name web is already used by a VM; "
        "pick another --name, or remove it with bootc-box rm --force web"
    )


def test_a_foreground_vm_leaves_nothing(runtime_dir: Path) -> None:
    directory = claim_vm_dir(NATIVE, "fg")
    with supervise_vm(directory, "img", detached=False) as vm:
        vm.update(state=VmState.RUNNING)
        found = read_record(directory)
        assert found is not None
        assert found.state is VmState.RUNNING
        assert found.supervisor_pid == os.getpid()
    assert not directory.exists()


@pytest.mark.parametrize(
    ("raised", "state", "error"),
    [
        (None, VmState.STOPPED, ""),
        (Terminated(), VmState.STOPPED, ""),
        (BootcBoxError("no kernel", "fix it"), VmState.FAILED, "no kernel; fix it"),
    ],
)
def test_a_detached_vm_keeps_its_end_state(
    raised: BaseException | None, state: VmState, error: str
) -> None:
    directory = claim_vm_dir(NATIVE, "bg")
    with (
        pytest.raises(type(raised)) if raised else contextlib.nullcontext(),
        supervise_vm(directory, "img", detached=True),
    ):
        if raised:
            raise raised
    found = read_record(directory)
    assert found is not None
    assert (found.state, found.error) == (state, error)


def test_find_without_a_name_needs_exactly_one_vm() -> None:
    with pytest.raises(BootcBoxError, match="no VMs here; start one with bootc-box run -d"):
        find_vm(NATIVE, None)
    for name in ("a", "b"):
        with supervise_vm(claim_vm_dir(NATIVE, name), "img", detached=True):
            pass
    with pytest.raises(BootcBoxError, match=r"2 VMs here \(a, b\); name the one you mean"):
        find_vm(NATIVE, None)
    assert find_vm(NATIVE, "b")[1].name == "b"
    with pytest.raises(BootcBoxError, match="no VM named c; see bootc-box list"):
        find_vm(NATIVE, "c")


def test_inspect_says_how_to_connect() -> None:
    info = describe(record(ssh_port=40022, ssh_key="/run/vm1/id_ed25519"))
    assert info["ssh"] == {
        "host": "127.0.0.1",
        "port": 40022,
        "user": "root",
        "key": "/run/vm1/id_ed25519",
        "host_key": "",
    }
    assert info["state"] == "running"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), (None, ())),
        (("--", "uname", "-a"), (None, ("uname", "-a"))),
        (("vm1",), ("vm1", ())),
        (("vm1", "--", "uname"), ("vm1", ("uname",))),
        (("vm1", "uname"), ("vm1", ("uname",))),
    ],
)
def test_ssh_arguments(args: tuple[str, ...], expected: tuple[object, ...]) -> None:
    assert name_and_command(args) == expected


def test_a_name_too_long_for_the_vms_sockets_is_refused_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as short:
        runtime = Path(short) / "run"
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        with pytest.raises(BootcBoxError, match="a socket path holds at most 107") as err:
            claim_vm_dir(Environment(in_box=False), "n" * 63)
        assert "pick a shorter --name" in str(err.value)
        assert not runtime.exists()
        assert claim_vm_dir(Environment(in_box=False), "short").is_dir()


@pytest.mark.parametrize(
    ("argv", "is_run"),
    [
        (["python3", "-m", "bootc_box", "run", "img"], True),
        (["python3", "-m", "bootc_box", "--debug", "run", "img"], True),
        (["/usr/bin/python3", "/usr/local/bin/bootc-box", "run", "-d", "img"], True),
        (["python3", "-m", "bootc_box", "ssh", "--", "run"], False),
        (["bash", "/usr/libexec/bootc-box/entrypoint", "run", "img"], False),
        (["sleep", "infinity"], False),
    ],
)
def test_a_starting_run_is_told_from_other_commands(argv: list[str], is_run: bool) -> None:
    assert is_run_command(argv) is is_run


def test_a_wall_clock_step_does_not_make_a_live_supervisor_look_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step moves /proc/stat's btime, and with it every process's
    create_time as psutil reckons it: `stop` would then signal nothing and
    `rm` delete a running VM's directory."""
    directory = claim_vm_dir(NATIVE, "web")
    with supervise_vm(directory, "img", detached=True):
        reckoned = psutil.Process.create_time
        monkeypatch.setattr(psutil.Process, "create_time", lambda p: reckoned(p) + 5.0)
        found = read_record(directory)
        assert found is not None
        assert current_state(found) is VmState.STARTING
        assert supervisor_alive(found)


@pytest.fixture
def child() -> Iterator["subprocess.Popen[bytes]"]:
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_supervisor_is_known_by_its_start_in_clock_ticks_since_boot(
    child: "subprocess.Popen[bytes]",
) -> None:
    ticks = start_ticks(child.pid)
    assert ticks is not None
    alive = record(supervisor_pid=child.pid, supervisor_ticks=ticks, supervisor_started=0.0)
    assert supervisor_alive(alive)
    assert not supervisor_alive(replace(alive, supervisor_ticks=ticks + 1))  # a reused pid
    child.kill()
    child.wait()
    assert start_ticks(child.pid) is None
    assert not supervisor_alive(alive)


def test_this_process_records_its_start_ticks() -> None:
    pid, _, ticks = this_process()
    assert ticks == start_ticks(pid) == start_ticks(os.getpid())
    assert ticks


def test_a_zombie_supervisor_is_dead() -> None:
    process = subprocess.Popen(["true"])
    ticks = start_ticks(process.pid)
    while psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    try:
        assert not supervisor_alive(record(supervisor_pid=process.pid, supervisor_ticks=ticks))
    finally:
        process.wait()


@pytest.mark.parametrize(
    ("text", "stat"),
    [
        ("42 (sleep) S 1 42 42 0 -1 4194560 " + "0 " * 12 + "98765 0 0", ProcStat("S", 98765)),
        # A program may name itself anything, parentheses and spaces too.
        ("7 (a) Z (b) R 1 7 7 0 -1 0 " + "0 " * 12 + "123 0", ProcStat("R", 123)),
    ],
)
def test_proc_stat_is_read_past_the_programs_name(text: str, stat: ProcStat) -> None:
    assert parse_proc_stat(text) == stat


def test_an_old_record_without_start_ticks_is_judged_by_its_create_time() -> None:
    assert supervisor_alive(record(supervisor_ticks=None))
    assert not supervisor_alive(record(supervisor_ticks=None, supervisor_started=1.0))


@pytest.mark.parametrize(
    ("starting", "making", "waits_for"),
    [
        (False, False, None),
        (True, False, Awaited.STARTING),
        (False, True, Awaited.MAKING),
        (True, True, Awaited.MAKING),
    ],
)
def test_a_lookup_that_finds_no_vm_waits_for_one_starting_or_being_made(
    starting: bool, making: bool, waits_for: Awaited | None
) -> None:
    assert awaited(starting=starting, making=making) is waits_for


def test_a_vm_being_made_here_is_known_while_its_run_lives() -> None:
    assert not being_made_here(NATIVE, "web")
    with making_here(NATIVE, "web"):
        assert being_made_here(NATIVE, "web")
        assert not being_made_here(NATIVE, "db")
        with pytest.raises(BootcBoxError, match="no VMs here"):
            find_vm(NATIVE, None)  # not a VM yet
    assert not being_made_here(NATIVE, "web")
    assert list(vms_dir(NATIVE).iterdir()) == []


def test_ssh_waits_for_a_vm_being_made_saying_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`podman run -d BOX run --persistent --name web IMAGE`, then `ssh web`
    while the image is installed to the VM's disk."""
    monkeypatch.setattr(manage, "starting_runs", lambda env: set())
    caplog.set_level(logging.INFO)
    vm = record(name="web")
    with making_here(NATIVE, "web"):
        with pytest.raises(BootcBoxError, match="no VM named web"):
            find_vm_when_started(NATIVE, "web", timeout=0.5)
        made = threading.Timer(0.3, lambda: write_record(claim_vm_dir(NATIVE, "web"), vm))
        made.start()
        directory, found = find_vm_when_started(NATIVE, "web", timeout=10)
        made.join()
    assert (directory.name, found.name) == ("web", "web")
    said = [r.getMessage() for r in caplog.records if "being made" in r.getMessage()]
    once = "VM web is being made (its image installed to its own disk); waiting for it"
    assert said == [once, once]  # once in each lookup
