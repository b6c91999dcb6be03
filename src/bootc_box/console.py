"""Showing the guest's serial console, which QEMU writes to a file, keeping
that file (and a detached supervisor's log, which copies it) from growing
without end (they live in /run, which is memory, and a chatty guest writes
for as long as it runs), and reading what it says about stalled CPUs."""

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from bootc_box.processes import TAIL, read_tail
from bootc_box.terminal import PrintableWriter

log = logging.getLogger(__name__)

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
    lost: a few lines, once per `limit` bytes. FILE is emptied before the
    new FILE.1 appears: a LogReader that saw FILE.1 change while FILE still
    held the old lines would read them twice."""
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    partial = path.with_name(f".{path.name}.1.partial")
    shutil.copyfile(path, partial)
    os.truncate(path, 0)
    partial.replace(rotated(path))
    return True


# Seconds between looks at the logs' sizes. QEMU does not hold a guest's
# serial console to its baud rate: a guest writing flat out put ~300 KB in
# a second into a log (tests/e2e/test_everyday.py, under TCG).
ROTATE_EVERY = 0.25


@contextmanager
def start_log_rotation(logs: tuple[Path, ...]) -> Iterator[None]:
    """Keep `logs` in bounds (rotate_if_large) until the block ends, whatever
    the run waits on meanwhile: the guest's console grows them all the
    while, as it boots, as a command runs, as the VM stays up."""
    limit = log_limit()
    done = threading.Event()

    def rotate() -> None:
        while not done.wait(ROTATE_EVERY):
            for path in logs:
                try:
                    rotate_if_large(path, limit)
                except OSError as e:  # /run full: the next look may have room
                    log.debug("could not rotate %s: %s", path, e)

    thread = threading.Thread(target=rotate, name="log rotation", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


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
    """A thread copying the console log to an output, as text the terminal
    will not act on, until stopped."""

    def __init__(self, console_log: Path, out: BinaryIO) -> None:
        self._done = threading.Event()
        console_log.touch()
        self._thread = threading.Thread(
            target=self._follow, args=(console_log, out), name="console", daemon=True
        )
        self._thread.start()

    def _follow(self, console_log: Path, out: BinaryIO) -> None:
        reader, shown = LogReader(console_log), PrintableWriter(out)
        try:
            while True:
                chunk = reader.read()
                if chunk:
                    shown.write(chunk)
                elif self._done.wait(0.2):
                    shown.write(reader.read())  # what came after the last read
                    shown.finish()
                    return
        finally:
            reader.close()

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


class ConsoleNews:
    """What the console log gained since the last look (at most its last
    TAIL bytes: the console may be large by now), with the end of what the
    look before read in front, which may hold the start of a phrase this
    look reads the rest of."""

    def __init__(self, console: Path, carry: int) -> None:
        self.console = console
        self.keep = carry
        self.read_to = 0
        self.carry = b""
        self.size = 0

    def read(self) -> bytes:
        try:
            with self.console.open("rb") as file:
                self.size = file.seek(0, os.SEEK_END)
                if self.size < self.read_to:  # rotated: it starts again
                    self.read_to, self.carry = 0, b""
                news = self.carry + read_tail(file, self.read_to, TAIL)
                self.read_to = file.tell()
        except FileNotFoundError:
            return b""
        self.carry = news[-self.keep :]
        return news

    def skip(self) -> None:
        """Look only at what the console gains from now on."""
        self.read()
        self.carry = b""


# What a guest says as it begins to reboot (systemd-logind, in the journal
# on the console), and what its kernel says as it resets the machine (at
# KERN_EMERG: also under `quiet`). `reboot -f` says only the second.
REBOOTING = b"System is rebooting."
RESETTING = b"reboot: Restarting system"


class RebootWatch:
    """Follows a guest that stays up through its reboots (a VM that stays
    up boots again in the same QEMU: qemu.QemuSpec.reboot)."""

    def __init__(self, console: Path) -> None:
        self.news = ConsoleNews(console, max(len(REBOOTING), len(RESETTING)) - 1)
        self.news.skip()
        self.reset = False

    def rebooting(self) -> bool:
        """Whether the guest began to reboot since the last look."""
        news = self.news.read()
        self.reset = RESETTING in news
        return self.reset or REBOOTING in news

    def wait_for_reset(self, running: Callable[[], bool], timeout: float) -> None:
        """Until the machine was reset, while `running`: its old sshd may
        still answer until then. At most `timeout` seconds (a guest that
        soft-reboots is never reset)."""
        deadline = time.monotonic() + timeout
        while not self.reset and running() and time.monotonic() < deadline:
            time.sleep(0.2)
            self.reset = RESETTING in self.news.read()

    def done(self) -> None:
        """The guest is back: what its console said until now is of this reboot."""
        self.news.skip()
        self.reset = False


STALL_REPORT = b"detected stalls on CPUs"


class StallWatch:
    """Under TCG on a small host, a guest vCPU now and then stops getting timer
    interrupts for good (seen in about 2 of 100 boots here); the kernel says
    so within ~21 s, and the boot would otherwise hang until --timeout. A
    stall can also pass, and the boot go on: only a stall report followed by
    `quiet` seconds without a new console line, or a second report, counts."""

    def __init__(self, console: Path, quiet: float = 20.0) -> None:
        self.news = ConsoleNews(console, len(STALL_REPORT) - 1)
        self.quiet = quiet
        self.size = -1
        self.grew_at = 0.0
        self.reports = 0

    def stalled(self, now: float) -> bool:
        # The carry is shorter than a report: none is counted twice.
        self.reports += self.news.read().count(STALL_REPORT)
        if self.news.size != self.size:
            self.size, self.grew_at = self.news.size, now
        return self.reports >= 2 or (self.reports == 1 and now - self.grew_at >= self.quiet)
