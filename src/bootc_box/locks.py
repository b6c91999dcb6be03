"""Run locks: a live run holds a lock named for its mount container, so that
`cache prune` (in any box sharing the volume) leaves that container alone."""

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bootc_box.environment import CACHE, Environment, runtime_dir


def runs_dir(env: Environment) -> Path:
    """Where live runs hold their locks: on the volume in the box, so every
    box sharing the volume sees them; natively, the runtime directory."""
    return CACHE / "runs" if env.in_box else runtime_dir(env) / "runs"


@contextmanager
def hold_run_lock(env: Environment, name: str) -> Iterator[None]:
    """Mark the mount container `name` as in use for as long as the block runs.
    The kernel drops the lock if we die, so a crashed run never looks live."""
    directory = runs_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh name: nobody else holds it
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def run_is_live(env: Environment, name: str) -> bool:
    try:
        fd = os.open(runs_dir(env) / f"{name}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        return not flock_within(fd, fcntl.LOCK_EX, 0)
    finally:
        os.close(fd)


def remove_stale_locks(env: Environment) -> int:
    """Delete the lock files of runs that died without removing them."""
    directory = runs_dir(env)
    stale = [p for p in directory.glob("*.lock") if not run_is_live(env, p.stem)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def flock_within(fd: int, operation: int, timeout: float) -> bool:
    """flock(2) that gives up after `timeout` seconds instead of waiting forever
    behind a run that hangs; False when it gave up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
