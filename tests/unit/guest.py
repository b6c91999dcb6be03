"""Shared by the tests of what shows or reads the guest's output: bytes a
guest could write to drive the user's terminal, what of them may be shown,
and how many bytes a call reads."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# A console line that would clear the screen, ask the terminal where its
# cursor is (a C1 CSI, raw and as UTF-8), set the window title, return the
# carriage, go to the next line (C1 NEL), delete and ring the bell.
HOSTILE = b"a\x1b[2Jb\x9bc\x1b]0;title\x07d\re\xc2\x9b6nf\xc2\x85g\x7fh\x07\n\tend\n"
# What is left to show: a raw 0x9b is not UTF-8, so it shows as U+FFFD.
SHOWN = "ab\ufffdcdefgh\n\tend\n"

MiB = 2**20

T = TypeVar("T")


def _bytes_read_so_far() -> int:
    """This thread's count of bytes read(2) returned, whatever the file."""
    for line in Path("/proc/thread-self/io").read_text().splitlines():
        name, value = line.split(":")
        if name == "rchar":
            return int(value)
    raise AssertionError("no rchar in /proc/thread-self/io")


def reading(call: Callable[[], T]) -> tuple[T, int]:
    """What `call` returned, and how many bytes it read (give or take the
    hundred that reading the count costs)."""
    before = _bytes_read_so_far()
    result = call()
    return result, _bytes_read_so_far() - before
