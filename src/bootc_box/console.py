"""Showing the guest's serial console, which QEMU writes to a file."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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
        with console_log.open("rb") as log:
            while True:
                chunk = log.read(65536)
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif self._done.wait(0.2):
                    return

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
