"""Showing the guest's serial console, which QEMU writes to a file."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def start_console_follower(console_log: Path, out: BinaryIO) -> Iterator[None]:
    """Copy what the guest prints to `out` as it arrives, until the block ends."""
    done = threading.Event()

    def follow() -> None:
        with console_log.open("rb") as log:
            while True:
                chunk = log.read(65536)
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif done.wait(0.2):
                    return

    console_log.touch()
    thread = threading.Thread(target=follow, name="console", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
