"""Entries under /cache that are whole or absent (see cache-layout.md).

An entry is a directory named by its key. It is written as a `.KEY.partial-*`
directory beside it and renamed into place, so an interrupted write leaves
only a partial that the next writer (or `cache prune`) deletes. Two locks
per entry: runs that read it hold `KEY.lock` shared, and whoever deletes it
holds that lock exclusively, so nobody deletes an entry under a reader; and
one run at a time creates an entry, holding `KEY.<verb>.lock`, which no
reader ever holds, so creating never waits for readers."""

import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bootc_box.environment import CACHE, Environment
from bootc_box.errors import BootcBoxError
from bootc_box.locks import lock_file, planted_link
from bootc_box.records import from_json, to_json

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 900.0
T = TypeVar("T")


def cache_dir(env: Environment, name: str) -> Path:
    """Where the entries of one kind live: /cache/NAME in the box, the user's
    cache directory natively."""
    if env.in_box:
        if (CACHE / name).is_symlink():
            raise planted_link(CACHE / name)
        return CACHE / name
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bootc-box" / name


# Whoever can write a shared cache can plant a symbolic link (or a FIFO)
# where an entry's file should be: followed, it would have us read, or hand
# QEMU, any file of the host. So an entry's files are opened as they are.


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be an entry's file: "missing", or "not a regular
    file" (a link, a FIFO); None when it is one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "missing"
    return None if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: Path) -> io.BufferedReader:
    """`path` opened for reading, never through a link; OSError when it is
    not a regular file (O_NONBLOCK: opening a FIFO would wait for a writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return file


def read_regular(path: Path) -> bytes:
    with open_regular(path) as file:
        return file.read()


def write_note_once(path: Path, data: bytes) -> bool:
    """Write a small note whole or not at all, unless something is at
    `path` already (another run's note, or a link planted there, which is
    never followed): whether it was written. A partial file next to it is
    linked into place, so that the first of runs writing at once wins."""
    partial = path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}")
    # O_EXCL: an existing name, a link too, is never opened.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as note:
            note.write(data)
        os.link(partial, path, follow_symlinks=False)
    except (FileExistsError, FileNotFoundError):  # theirs, or a prune took ours
        return False
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return True


# Every entry's record of what it holds.
MANIFEST = "manifest.json"


def write_manifest(partial: Path, manifest: object) -> None:
    (partial / MANIFEST).write_text(to_json(manifest))


def read_manifest(entry: Path, kind: type[T]) -> T:
    """The entry's manifest, read as a `kind` (records.from_json), never
    through a link; OSError, ValueError or TypeError when it cannot be."""
    return from_json(kind, json.loads(read_regular(entry / MANIFEST)))


def manifest_problem(entry: Path, kind: type[T]) -> T | str:
    """The entry's manifest; or why the entry has none that can be read."""
    if entry.is_symlink():
        return "it is a symbolic link"
    try:
        return read_manifest(entry, kind)
    except FileNotFoundError:
        return "it has no manifest" if entry.exists() else "it is not there"
    except (OSError, ValueError, TypeError):
        return "its manifest is unreadable"


def partial_key(name: str) -> str | None:
    """The key a partial directory called `name` is being made for, if it is one."""
    if not name.startswith(".") or ".partial-" not in name:
        return None
    return name[1:].rsplit(".partial-", 1)[0]


def remove_entry(entry: Path) -> None:
    """Delete an entry, or the link or file planted in its place (not what
    a link names)."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


@dataclass(frozen=True)
class Entries:
    directory: Path
    # Names the creation lock: `KEY.extract.lock` for boot files.
    creating: str

    def entry(self, key: str) -> Path:
        return self.directory / key

    def use_lock(self, key: str) -> Path:
        return self.directory / f"{key}.lock"

    def create_lock(self, key: str) -> Path:
        return self.directory / f"{key}.{self.creating}.lock"

    def names(self) -> list[str]:
        """Every key with an entry or a lock (an entry once used, or gone)."""
        if not self.directory.is_dir():
            return []
        names = {p.name.split(".", 1)[0] for p in self.directory.iterdir()}
        return sorted(names - {""})  # partials start with a dot

    def whole(self, problem: Callable[[Path, str], str | None]) -> list[tuple[Path, int]]:
        """Every entry `problem` finds nothing wrong with, and the blocks its
        files use (their files may be sparse)."""
        found = []
        for key in self.names():
            entry = self.entry(key)
            if problem(entry, key) is None:
                found.append((entry, sum(p.stat().st_blocks * 512 for p in entry.iterdir())))
        return found

    def lock(self, path: Path, operation: int, timeout: float | None = None) -> int | None:
        """The lock's descriptor, or None when it was not had within `timeout`
        seconds (LOCK_TIMEOUT by default: a stuck run must not hang us)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return lock_file(path, operation, LOCK_TIMEOUT if timeout is None else timeout, 0o644)

    @contextmanager
    def find(
        self, key: str, problem: Callable[[Path, str], str | None], damaged: str
    ) -> Iterator[Path | None]:
        """The entry of `key`, held against deletion until the block ends;
        None when there is none whole. One that `problem` finds wrong is
        deleted (unless another run made it whole meanwhile) with the
        warning `damaged`, formatted with the key and the problem."""
        fd = self.lock(self.use_lock(key), fcntl.LOCK_SH)
        if fd is None:
            yield None
            return
        entry = self.entry(key)
        try:
            found = problem(entry, key)
            if found is None:
                yield entry
                return
        finally:
            os.close(fd)
        if os.path.lexists(entry):
            log.warning(damaged, key, found)
            self.delete(key, timeout=0, only_if=lambda: problem(entry, key))
        yield None

    @contextmanager
    def making(self, key: str, waiting: str, what: str) -> Iterator[Path]:
        """A partial directory to make the entry of `key` in, while this run
        alone may: other runs of the key wait here, saying `waiting`, for up
        to LOCK_TIMEOUT, and then find what it made. The caller fills the
        directory and commits it; what a killed run left is removed first."""
        fd = self.lock(self.create_lock(key), fcntl.LOCK_EX, timeout=0)
        if fd is None:
            log.info("%s", waiting)
            fd = self.lock(self.create_lock(key), fcntl.LOCK_EX)
            if fd is None:
                raise BootcBoxError(
                    f"gave up waiting for another run's {what}",
                    "see whether a stuck bootc-box runs, or run bootc-box cache prune",
                )
        try:
            self.remove_partial(key)
            with self.partial(key) as partial:
                yield partial
        finally:
            os.close(fd)

    def remove_partial(self, key: str) -> None:
        """Drop what writers killed mid-write left; call with the creation
        lock held, so none of them is still being written."""
        for leftover in self.directory.glob(f".{key}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def delete(
        self, key: str, timeout: float | None = None, only_if: Callable[[], object] = lambda: True
    ) -> bool:
        """Delete the entry once no reader holds it, if `only_if` (asked with
        the lock held: the entry may have been replaced) still says so; False
        when readers kept it for `timeout` seconds, or it was kept."""
        fd = self.lock(self.use_lock(key), fcntl.LOCK_EX, timeout)
        if fd is None:
            return False
        try:
            if not only_if():
                return False
            remove_entry(self.entry(key))
        finally:
            os.close(fd)
        return True

    @contextmanager
    def partial(self, key: str) -> Iterator[Path]:
        """A new directory to fill and then `commit`; whatever is left of it
        when the block ends (it was not committed) is removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=self.directory))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(
        self, partial: Path, key: str, problem: Callable[[Path, str], str | None] | None = None
    ) -> Path:
        """Rename a filled partial directory into place as the entry; with
        `problem`, in place of a damaged one (`problem` says so, asked with
        its lock held) once no run reads it."""
        entry = self.entry(key)
        damaged = problem  # for the lambda: mypy forgets the check below in it
        if (
            damaged is not None
            and os.path.lexists(entry)
            and not self.delete(key, only_if=lambda: damaged(entry, key))
        ):
            raise BootcBoxError(
                f"cannot replace the damaged cache entry {entry}: a run still reads it",
                "see whether a stuck bootc-box runs, then run again",
            )
        partial.chmod(0o755)
        partial.rename(entry)
        return entry

    def prune(self, doomed: Callable[[str], bool]) -> int:
        """Remove the entries `doomed` picks, skipping any that a run is
        reading or creating; returns how many went."""
        removed = 0
        for key in self.names():
            if not doomed(key):
                continue
            with ExitStack() as held:
                for path in (self.create_lock(key), self.use_lock(key)):
                    fd = self.lock(path, fcntl.LOCK_EX, 0)
                    if fd is None:  # in use
                        break
                    held.callback(os.close, fd)
                else:
                    self.remove_partial(key)
                    if os.path.lexists(self.entry(key)):
                        remove_entry(self.entry(key))
                        removed += 1
                    # Deleted while we hold them, so no run relies on them.
                    self.use_lock(key).unlink()
                    self.create_lock(key).unlink()
        return removed
