"""Showing the guest's serial console, which QEMU writes to a file, keeping
that file (and a detached supervisor's log, which copies it) from growing
without end (they live in /run, which is memory, and a chatty guest writes
for as long as it runs), and reading what it says about stalled CPUs."""

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# Each log keeps at most about twice this: the file, and FILE.1 before it.
LOG_LIMIT_VARIABLE = "BOOTC_BOX_LOG_LIMIT"
LOG_LIMIT = 8 * 2**20


def log_limit() -> int:
    return int(os.environ.get(LOG_LIMIT_VARIABLE) or LOG_LIMIT)


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def rotate_if_large(path: Path, limit: int) -> bool:
    """Once `path` has grown past `limit`, move what it holds to FILE.1 (a
    new file each time, which is how readers notice) and empty it. Its
    writers append (O_APPEND), so they go on at the new end, not at their
    old offset. What is written between the copy and the truncation is
    lost: a few lines, once per `limit` bytes."""
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    partial = path.with_name(f".{path.name}.1.partial")
    shutil.copyfile(path, partial)
    partial.replace(rotated(path))
    os.truncate(path, 0)
    return True


class LogReader:
    """Reads what is appended to a log, across rotations: when FILE.1 is a
    new file, the rest of what this reader had not read is in it, and the
    log goes on from its start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = self._generation()
        self.file = path.open("rb")

    def _generation(self) -> int | None:
        try:
            return rotated(self.path).stat().st_ino
        except FileNotFoundError:
            return None

    def read(self) -> bytes:
        generation = self._generation()
        if generation == self.generation:
            return self.file.read()
        self.generation = generation
        rest = b""
        with contextlib.suppress(FileNotFoundError), rotated(self.path).open("rb") as old:
            old.seek(self.file.tell())
            rest = old.read()
        self.file.seek(0)
        return rest + self.file.read()

    def close(self) -> None:
        self.file.close()


class ConsoleFollower:
    """A thread copying the console log to an output until stopped."""

    def __init__(self, console_log: Path, out: BinaryIO) -> None:
        self._done = threading.Event()
        console_log.touch()
        self._thread = threading.Thread(
            target=self._follow, args=(console_log, out), name="console", daemon=True
        )
        self._thread.start()

    def _follow(self, console_log: Path, out: BinaryIO) -> None:
        log = LogReader(console_log)
        try:
            while True:
                chunk = log.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif self._done.wait(0.2):
                    out.write(log.read())  # what came after the last read
                    out.flush()
                    return
        finally:
            log.close()

    def stop(self) -> None:
        """Copy what is left, then stop; stopping twice is harmless."""
        self._done.set()
        self._thread.join()


@contextmanager
def start_console_follower(console_log: Path, out: BinaryIO) -> Iterator[ConsoleFollower]:
    """Copy what the guest prints to `out` as it arrives, until the block ends
    or the follower is stopped."""
    follower = ConsoleFollower(console_log, out)
    try:
        yield follower
    finally:
        follower.stop()


STALL_REPORT = b"detected stalls on CPUs"


class StallWatch:
    """Under TCG on a small host, a guest vCPU now and then stops getting timer
    interrupts for good (seen in about 2 of 100 boots here); the kernel says
    so within ~21 s, and the boot would otherwise hang until --timeout. A
    stall can also pass, and the boot go on: only a stall report followed by
    `quiet` seconds without a new console line, or a second report, counts."""

    def __init__(self, console: Path, quiet: float = 20.0) -> None:
        self.console = console
        self.quiet = quiet
        self.size = -1
        self.grew_at = 0.0

    def stalled(self, now: float) -> bool:
        try:
            text = self.console.read_bytes()
        except FileNotFoundError:
            return False
        if len(text) != self.size:
            self.size, self.grew_at = len(text), now
        reports = text.count(STALL_REPORT)
        return reports >= 2 or (reports == 1 and now - self.grew_at >= self.quiet)
