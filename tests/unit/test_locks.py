import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import mount_locks_dir
from bootc_box.locks import (
    delete_if_unused,
    hold_mount_lock,
    lock_file,
    mount_is_live,
    names_locked_file,
    remove_stale_locks,
)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_a_run_is_live_while_it_holds_its_lock_and_leaves_no_file(runs: Path) -> None:
    assert not mount_is_live(runs, "bootc-box-a")
    with hold_mount_lock(runs, "bootc-box-a"):
        assert mount_is_live(runs, "bootc-box-a")
        assert oct((runs / "bootc-box-a.lock").stat().st_mode & 0o777) == "0o600"
    assert not mount_is_live(runs, "bootc-box-a")
    assert list(runs.iterdir()) == []


def test_the_lock_of_a_dead_run_is_stale_and_pruned(runs: Path) -> None:
    runs.mkdir(parents=True)
    (runs / "bootc-box-dead.lock").touch()  # what a SIGKILLed run leaves
    with hold_mount_lock(runs, "bootc-box-live"):
        assert not mount_is_live(runs, "bootc-box-dead")
        assert remove_stale_locks(runs) == 1
        assert [p.name for p in runs.iterdir()] == ["bootc-box-live.lock"]


def test_run_locks_live_with_the_store_they_protect(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mount_locks_dir(Environment(in_box=True)) == Path("/cache/runs")
    if shutil.which("podman") is None:
        pytest.skip("natively the store's run root comes from podman, which is not here")
    store = subprocess.run(
        ["podman", "info", "--format", "{{.Store.RunRoot}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # Whatever the session's runtime directory is.
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/elsewhere")
    assert mount_locks_dir(Environment(in_box=False)) == Path(store) / "bootc-box-runs"


def prune_until(stop: threading.Event, path: Path) -> None:
    # A pruner that never lets go of the GIL would hold the lock nearly all the
    # time, which no real prune does (it visits each file once); a yield keeps
    # it hostile to the open-to-flock window and nothing else.
    while not stop.is_set():
        delete_if_unused(path)
        time.sleep(0)


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


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the cache that a planted link points at."""
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_text("keep me\n")
    victim.chmod(0o640)
    return victim


def plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_left_alone(
    runs: Path, outside: Path
) -> None:
    link = plant(runs / "bootc-box-a.lock", outside)
    uses: list[Callable[[], object]] = [
        lambda: lock_file(link, fcntl.LOCK_EX, 0),
        lambda: mount_is_live(runs, "bootc-box-a"),
        lambda: remove_stale_locks(runs),
    ]
    for lock in uses:
        with pytest.raises(BootcBoxError, match="is a symbolic link") as err:
            lock()
        assert err.value.hint == f"delete it (rm {link}), and see who else writes to the cache"
    assert outside.read_text() == "keep me\n"
    assert oct(outside.stat().st_mode & 0o777) == "0o640"


def test_a_lock_file_planted_as_a_dangling_link_creates_nothing(runs: Path, tmp_path: Path) -> None:
    target = tmp_path / "made"
    link = plant(runs / "bootc-box-a.lock", target)
    with pytest.raises(BootcBoxError, match="is a symbolic link"):
        lock_file(link, fcntl.LOCK_SH, 0)
    assert not target.exists()
