import fcntl
import os
import threading
from pathlib import Path

import pytest

from bootc_box import locks
from bootc_box.environment import Environment
from bootc_box.locks import (
    delete_if_unused,
    hold_run_lock,
    lock_file,
    names_locked_file,
    remove_stale_locks,
    run_is_live,
)

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


def prune_until(stop: threading.Event, path: Path) -> None:
    while not stop.is_set():
        delete_if_unused(path)


def test_a_lock_file_deleted_before_it_was_locked_is_not_relied_on(tmp_path: Path) -> None:
    """Between a run's open and its flock, prune may lock and delete the file;
    the run must then hold a lock on the file the path names, not on the
    deleted one that nobody else will ever see."""
    path = tmp_path / "key.lock"
    for _ in range(200):
        stop = threading.Event()

        pruner = threading.Thread(target=prune_until, args=(stop, path))
        pruner.start()
        try:
            fd = lock_file(path, fcntl.LOCK_SH, 5)
            assert fd is not None
            try:
                assert names_locked_file(fd, path)
            finally:
                os.close(fd)
        finally:
            stop.set()
            pruner.join()
