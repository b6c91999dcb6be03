"""`podman run -it ... run IMAGE` with no command: a shell in the guest."""

import os
import pty
import subprocess
import time

from tests.e2e.conftest import BOOT_DEADLINE, FIXTURE, box_argv, read_until


def test_terminal_without_command_gets_a_shell_whose_exit_status_is_returned() -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        box_argv("run", FIXTURE, options=("--rm", "-it")),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    try:
        # The VM is up once bootc-box says so; then the login shell reads
        # what we type.
        read_until(controller, b"VM is up after", time.monotonic() + BOOT_DEADLINE)
        os.write(controller, b"echo answer-$((6*7)); exit 3\r")
        read_until(controller, b"answer-42", time.monotonic() + 120)
        assert proc.wait(timeout=120) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


def test_ctrl_c_during_boot_stops_cleanly() -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        box_argv("run", FIXTURE, options=("--rm", "-it")),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    try:
        read_until(controller, b"bootc-box: Booting", time.monotonic() + BOOT_DEADLINE)
        os.write(controller, b"\x03")
        read_until(controller, b"bootc-box: interrupted", time.monotonic() + 60)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
