import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, last_line_of, read_tail, start_process, wait_until
from tests.unit.guest import HOSTILE, SHOWN, MiB, reading


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


def test_the_last_line_of_a_guests_output_is_shown_as_text(tmp_path: Path) -> None:
    """It goes into error messages, and a guest wrote it (its console, or
    what its tar said in a cp)."""
    first_line = HOSTILE.split(b"\n")[0]
    assert last_line_of(first_line.decode(errors="replace")) == SHOWN.split("\n")[0]
    log = tmp_path / "console.log"
    log.write_bytes(b"[    1.0] booting\n" + first_line + b"\n\n")
    assert last_line(log) == SHOWN.split("\n")[0]


def test_the_last_line_of_a_large_log_is_read_from_its_end(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"[    1.00] a chatty guest\n" * (8 * MiB // 26) + b"login: \n")
    line, read = reading(lambda: last_line(log))
    assert line == "login:"
    assert read < MiB  # of 8 MiB


def test_read_tail_reads_from_a_start_at_most_the_last_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    with path.open("rb") as file:
        assert read_tail(file, 0, 4) == b"6789"
        assert read_tail(file, 8, 4) == b"89"
        assert read_tail(file, 0, 100) == b"0123456789"
        assert read_tail(file, 12, 4) == b""


def dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_helper_dies_when_bootc_box_is_killed_outright() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "from bootc_box.processes import spawn; import sys\n"
         "print(spawn(['sleep', '600']).pid, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert parent.stdout is not None
    helper = int(parent.stdout.readline())
    # Once setpriv has exec'd the helper, its death signal is armed.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{helper}/comm").read_text() != "sleep\n":
        assert time.monotonic() < deadline, "the helper never started"
        time.sleep(0.01)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not dead(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead(helper)
