import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bootc_box.console import rotated
from bootc_box.environment import Environment
from bootc_box.manage import run_logs, run_rm, wait_gone
from bootc_box.vms import RunRecord, VmState, claim_vm_dir, kept_vms_dir, read_record, write_record
from tests.unit.guest import HOSTILE, SHOWN


def test_a_zombie_has_ended() -> None:
    """A supervisor whose parent never reaps it (PID 1 is `sleep infinity`)
    stays a zombie; stop must not wait for it to vanish."""
    child = subprocess.Popen(["true"])
    process = psutil.Process(child.pid)
    while process.status() != psutil.STATUS_ZOMBIE:  # not reaped: we never wait() for it
        time.sleep(0.01)
    try:
        assert wait_gone(process, timeout=5.0)
    finally:
        child.wait()


def test_a_live_process_has_not_ended() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not wait_gone(psutil.Process(child.pid), timeout=0.3)
    finally:
        child.kill()
        child.wait()


def test_rm_all_deletes_nothing_a_record_names_outside_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM's record says its name; `rm` removes the kept VM of that name."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = Environment(in_box=False)
    directory = claim_vm_dir(env, "web")
    write_record(directory, RunRecord("../../x", "img", VmState.STOPPED, 0, 0.0, True, "now"))
    outside = kept_vms_dir(env) / ".." / ".." / "x"
    outside.mkdir(parents=True)
    (outside / "vm.json").write_text("{}")
    assert read_record(directory) is None
    run_rm(env, (), force=False, remove_all=True, timeout=1)
    assert (outside / "vm.json").read_text() == "{}"


def test_logs_show_the_guests_bytes_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Across the rotated log and the current one, as one stream: what the
    rotation cut in two is still one sequence."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    env = Environment(in_box=False)
    directory = claim_vm_dir(env, "web")
    write_record(directory, RunRecord("web", "img", VmState.STOPPED, 0, 0.0, True, "now"))
    console = directory / "boot-1/console.log"
    console.parent.mkdir()
    cut = HOSTILE.index(b"]0;")
    rotated(console).write_bytes(HOSTILE[:cut])
    console.write_bytes(HOSTILE[cut:])
    assert run_logs(env, "web", follow=False) == 0
    assert capsysbinary.readouterr().out == SHOWN.encode()
