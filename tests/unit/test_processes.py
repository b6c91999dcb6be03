import subprocess
from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, start_process, wait_until


def test_process_is_terminated_and_reaped_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), start_process(["sleep", "600"]) as proc:  # noqa: PT012
        assert proc.poll() is None
        raise RuntimeError
    assert proc.returncode == -15


def test_process_that_ignores_sigterm_is_killed() -> None:
    argv = ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"]
    with start_process(argv, stdout=subprocess.PIPE, stop_timeout=0.5) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # the trap is in place
    assert proc.returncode == -9


def test_wait_until_reports_the_exit_of_the_process() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    with pytest.raises(BootcBoxError, match="exited 3"):
        wait_until(
            lambda: False,
            proc,
            timeout=30,
            on_exit=lambda status: BootcBoxError(f"exited {status}"),
            on_timeout=lambda: BootcBoxError("timeout"),
        )


def test_wait_until_times_out() -> None:
    with start_process(["sleep", "600"]) as proc, pytest.raises(BootcBoxError, match="timeout"):
        wait_until(
            lambda: False,
            proc,
            timeout=0.2,
            on_exit=lambda status: BootcBoxError("exit"),
            on_timeout=lambda: BootcBoxError("timeout"),
        )


def test_last_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert last_line(log) == ""
    log.write_text("first\nqemu: error: failed\n\n")
    assert last_line(log) == "qemu: error: failed"
