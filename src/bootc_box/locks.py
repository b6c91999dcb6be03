"""Lock files under /cache: flock(2) on files that others may delete.

A lock file is only ever deleted by a process that holds it exclusively, and
whoever locks one checks afterwards that the path still names the file it
locked: a file deleted (or replaced) between our open and our flock is not
the lock anybody else will see, so we lock the new one instead.

Run locks: a live run holds a lock named for its mount container, so that
`cache prune` (in any box sharing the volume) leaves that container alone."""

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bootc_box.errors import BootcBoxError


def flock_within(fd: int, operation: int, timeout: float) -> bool:
    """flock(2) that gives up after `timeout` seconds instead of waiting forever
    behind a run that hangs; False when it gave up.

    Never call it to turn a shared lock into an exclusive one: flock drops
    the shared lock first, so a failed try leaves nothing held. Unlock, then
    lock exclusively, then look again at what the lock protects."""
    deadline = time.monotonic() + timeout
    # Most holders are brief (a prune deleting a file, a run taking its
    # place): look again soon, then back off to spare the CPU behind a long one.
    pause = 0.005
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)


def names_locked_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def planted_link(path: Path) -> BootcBoxError:
    """A symbolic link where bootc-box keeps a file or directory of its own:
    followed, it would have us create, lock or read something elsewhere."""
    return BootcBoxError(
        f"{path} is a symbolic link", f"delete it (rm {path}), and see who else writes to the cache"
    )


def open_lock(path: Path, flags: int, mode: int = 0o600) -> int:
    """Open a lock file, never through a link that a writer of the cache planted."""
    try:
        return os.open(path, flags | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise planted_link(path) from e


def lock_file(path: Path, operation: int, timeout: float, mode: int = 0o600) -> int | None:
    """Open (creating it) and flock `path`; the open descriptor, or None when
    the lock was not had within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        fd = open_lock(path, os.O_CREAT, mode)
        try:
            if not flock_within(fd, operation, max(0.0, deadline - time.monotonic())):
                os.close(fd)
                return None
            if names_locked_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        # Deleted by its last holder between our open and our flock: the lock
        # that counts is on whatever file the path names now.
        os.close(fd)


def delete_if_unused(path: Path) -> bool:
    """Delete the lock file `path` if nobody holds it (deleting it while we
    hold it exclusively, so nobody can be about to rely on it)."""
    fd = lock_file(path, fcntl.LOCK_EX, 0)
    if fd is None:
        return False
    try:
        path.unlink()
        return True
    finally:
        os.close(fd)


@contextmanager
def hold_lock(path: Path, busy: BootcBoxError) -> Iterator[None]:
    """Hold `path` (in a directory that exists) exclusively for the block,
    or raise `busy` if another process holds it now."""
    fd = lock_file(path, fcntl.LOCK_EX, 0)
    if fd is None:
        raise busy
    try:
        yield
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """Whether a process holds `path`'s lock now (False when there is no such file)."""
    if not path.exists():
        return False
    fd = lock_file(path, fcntl.LOCK_EX, 0)
    if fd is None:
        return True
    os.close(fd)
    return False


@contextmanager
def hold_mount_lock(directory: Path, name: str) -> Iterator[None]:
    """Mark the mount container `name` as in use for as long as the block runs.
    The kernel drops the lock if we die, so a crashed run never looks live."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.lock"
    fd = lock_file(path, fcntl.LOCK_EX, 0)  # a fresh name: nobody else holds it
    if fd is None:
        raise AssertionError(f"{path} is locked by another run")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def mount_is_live(directory: Path, name: str) -> bool:
    try:
        fd = open_lock(directory / f"{name}.lock", 0)
    except FileNotFoundError:
        return False
    try:
        return not flock_within(fd, fcntl.LOCK_EX, 0)
    finally:
        os.close(fd)


def remove_stale_locks(directory: Path) -> int:
    """Delete the lock files of runs that died without removing them."""
    return sum(delete_if_unused(p) for p in directory.glob("*.lock"))
