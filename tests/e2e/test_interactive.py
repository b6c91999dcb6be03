"""`podman run -it ... run IMAGE`: a terminal, as a person at a keyboard has."""

import os
import pty
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.conftest import BOOT_DEADLINE, FIXTURE, box_argv, read_until


@contextmanager
def box_on_terminal(*args: str) -> Iterator[tuple["subprocess.Popen[bytes]", int]]:
    """Run the box with `-it` on a new pty; yields it and the pty's keyboard end."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        box_argv(*args, options=("--rm", "-it")),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    try:
        yield proc, controller
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


def test_terminal_without_command_gets_a_shell_whose_exit_status_is_returned() -> None:
    with box_on_terminal("run", FIXTURE) as (proc, keyboard):
        # The VM is up once bootc-box says so; then the login shell reads
        # what we type.
        read_until(keyboard, b"VM up in", time.monotonic() + BOOT_DEADLINE)
        os.write(keyboard, b"echo answer-$((6*7)); exit 3\r")
        read_until(keyboard, b"answer-42", time.monotonic() + 120)
        assert proc.wait(timeout=120) == 3


def test_ctrl_c_during_boot_stops_cleanly() -> None:
    with box_on_terminal("run", FIXTURE) as (proc, keyboard):
        read_until(keyboard, b"bootc-box: Booting", time.monotonic() + BOOT_DEADLINE)
        os.write(keyboard, b"\x03")
        read_until(keyboard, b"bootc-box: interrupted", time.monotonic() + 60)
        assert proc.wait(timeout=60) == 130
