"""`podman run -it ... run IMAGE`: a terminal, as a person at a keyboard has."""

import os
import pty
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.conftest import BOOT_DEADLINE, FIXTURE, CacheVolume, box_argv, read_until


@contextmanager
def box_on_terminal(
    *args: str, volume: str | None = None
) -> Iterator[tuple["subprocess.Popen[bytes]", int]]:
    """Run the box with `-it` on a new pty; yields it and the pty's keyboard end."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        box_argv(*args, volume=volume, options=("--rm", "-it", "-e", "TERM=xterm-256color")),
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


def test_terminal_without_command_gets_a_shell_whose_exit_status_is_returned(
    warm_volume: CacheVolume,
) -> None:
    """Restored: the shell is the subject, not the boot."""
    with box_on_terminal("run", FIXTURE, volume=warm_volume.name) as (proc, keyboard):
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


PHASES = ("pull", "mount", "boot files", "restore", "ssh")


def test_a_terminal_sees_each_phase_live_and_where_the_time_went(
    warm_volume: CacheVolume,
) -> None:
    with box_on_terminal("run", FIXTURE, "--", "true", volume=warm_volume.name) as (proc, keys):
        # The summary line is the one that ends "s)".
        shown = read_until(keys, b" s)\r", time.monotonic() + BOOT_DEADLINE)
        assert proc.wait(timeout=60) == 0
    text = shown.decode(errors="replace")
    # A status line redrawn in place (rich erases the line it redraws)...
    assert "\x1b[2K" in text
    # ...that ends as a line with the phase's time, for each phase in turn.
    ended = re.findall(r"bootc-box: ([a-z ]+) [0-9.]+ s\r?\n", text)
    assert ended == list(PHASES), text
    assert re.search(r"VM up in \d+ s, restored \(pull \d+ s, mount \d+ s, boot files \d+ s, "
                     r"restore \d+ s, ssh \d+ s\)", text), text  # fmt: skip


def test_without_a_terminal_progress_is_plain_timestamped_lines(
    warm_volume: CacheVolume,
) -> None:
    result = subprocess.run(
        box_argv("run", FIXTURE, "--", "true", volume=warm_volume.name, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", result.stderr), result.stderr
    ended = re.findall(r"^bootc-box: \d\d:\d\d:\d\d ([a-z ]+) [0-9.]+ s$", result.stderr, re.M)
    # No terminal and no -i: the command goes over virtio-serial, no login.
    assert ended == [phase for phase in PHASES if phase != "ssh"], result.stderr
