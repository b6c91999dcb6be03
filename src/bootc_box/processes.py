"""Helper processes that never outlive us."""

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from bootc_box.terminal import printable

log = logging.getLogger(__name__)


def die_with_parent_argv(argv: Sequence[str]) -> list[str]:
    """`argv`, run so that the kernel kills it if bootc-box dies outright
    (SIGKILL, OOM), instead of leaving QEMU or virtiofsd behind.

    setpriv sets the death signal before exec'ing the helper. Setting it from
    a Python preexec_fn would run Python code in the forked child, where a
    Ctrl-C arriving at that moment was swallowed instead of stopping us.
    (Were bootc-box killed in the microseconds before setpriv arms the
    signal, the helper would outlive it; in the box, the container ends with us.)
    """
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


def spawn(argv: Sequence[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
    """Start a helper in its own process group, so a terminal's Ctrl-C reaches
    only bootc-box, which then stops the helpers in order."""
    log.debug("running %s", " ".join(argv))
    return subprocess.Popen(die_with_parent_argv(argv), process_group=0, **kwargs)


def stop(proc: "subprocess.Popen[bytes]", timeout: float = 10.0) -> None:
    """Terminate, wait, and kill if it will not go; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


@contextmanager
def start_process(
    argv: Sequence[str],
    *,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = None,
    stop_timeout: float = 10.0,
) -> Iterator["subprocess.Popen[bytes]"]:
    proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        yield proc
    finally:
        stop(proc, stop_timeout)


def wait_until(
    ready: Callable[[], bool],
    proc: "subprocess.Popen[bytes]",
    timeout: float,
    *,
    interval: float = 0.05,
    on_exit: Callable[[int], BaseException],
    on_timeout: Callable[[], BaseException],
    on_tick: Callable[[float], None] = lambda elapsed: None,
) -> None:
    """Poll `ready` until it holds; raise if `proc` exits or time runs out."""
    started = time.monotonic()
    while not ready():
        status = proc.poll()
        if status is not None:
            raise on_exit(status)
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise on_timeout()
        on_tick(elapsed)
        time.sleep(interval)


# Far more than a line, far less than a log may hold: what reading a log's
# news costs, whatever its size.
TAIL = 64 * 2**10


def last_line_of(text: str, default: str = "") -> str:
    """The last non-empty line of what a program said: the cause, for an
    error. As text: the program may have passed on what a guest wrote."""
    lines = printable(text).strip().splitlines()
    return lines[-1].strip() if lines else default


def read_tail(file: BinaryIO, start: int, limit: int) -> bytes:
    """What `file` holds from `start` to its end, but no more than the last
    `limit` bytes of that."""
    end = file.seek(0, os.SEEK_END)
    file.seek(max(start, end - limit))
    return file.read(limit)


def last_line(path: Path) -> str:
    """The last non-empty line of a helper's log (or the guest's console),
    read from its end: a status line asks for it four times a second."""
    try:
        with path.open("rb") as log:
            return last_line_of(read_tail(log, 0, TAIL).decode(errors="replace"))
    except FileNotFoundError:
        return ""
