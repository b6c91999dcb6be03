import os
from pathlib import Path

import pytest

from bootc_box import locks
from bootc_box.environment import Environment
from bootc_box.locks import hold_run_lock, remove_stale_locks, run_is_live

NATIVE = Environment(in_box=False)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "bootc-box/runs"


def test_a_run_is_live_while_it_holds_its_lock_and_leaves_no_file(runtime_dir: Path) -> None:
    assert not run_is_live(NATIVE, "bootc-box-a")
    with hold_run_lock(NATIVE, "bootc-box-a"):
        assert run_is_live(NATIVE, "bootc-box-a")
        assert oct((runtime_dir / "bootc-box-a.lock").stat().st_mode & 0o777) == "0o600"
    assert not run_is_live(NATIVE, "bootc-box-a")
    assert list(runtime_dir.iterdir()) == []


def test_the_lock_of_a_dead_run_is_stale_and_pruned(runtime_dir: Path) -> None:
    runtime_dir.mkdir(parents=True)
    (runtime_dir / "bootc-box-dead.lock").touch()  # what a SIGKILLed run leaves
    with hold_run_lock(NATIVE, "bootc-box-live"):
        assert not run_is_live(NATIVE, "bootc-box-dead")
        assert remove_stale_locks(NATIVE) == 1
        assert [p.name for p in runtime_dir.iterdir()] == ["bootc-box-live.lock"]


def test_lock_lives_in_the_volume_inside_the_box() -> None:
    assert locks.runs_dir(Environment(in_box=True)) == Path("/cache/runs")
    assert os.fspath(locks.runs_dir(NATIVE)).endswith("bootc-box/runs")
