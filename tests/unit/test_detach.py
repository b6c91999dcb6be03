"""`run -d`'s hand-over to a supervisor daemon, with the real fork and
python-daemon; the supervisor's work is a stand-in (no image, no VM), so
these run anywhere. Each case runs in its own process, as `bootc-box` does."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.unit.guest import HOSTILE, SHOWN

# The stand-in: marks the VM booting (or fails, as a bad image would), then
# waits for the test to ask it to stop.
SCRIPT = """
import sys, time
from pathlib import Path
from bootc_box.detach import start_detached
from bootc_box.errors import BootcBoxError
from bootc_box.vms import VmState, supervise_vm

directory, mode = Path(sys.argv[1]), sys.argv[2]

def supervise():
    with supervise_vm(directory, "img", detached=True) as vm:
        if mode == "fail":
            raise BootcBoxError("the image is broken", "fix the image")
        if mode == "hostile":  # as the guest's console, followed into this log
            sys.stderr.buffer.write(bytes.fromhex(sys.argv[3]))
            sys.stderr.flush()
        vm.update(state=VmState.BOOTING)
        while not (directory / "stop").exists():
            time.sleep(0.05)
        return 0

sys.exit(start_detached(directory, supervise))
"""


def start(tmp_path: Path, mode: str, stdin: int, *args: str) -> "subprocess.CompletedProcess[str]":
    directory = tmp_path / "vm-test"
    directory.mkdir()
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(directory), mode, *args],
        stdin=stdin, capture_output=True, text=True, errors="replace", check=False, timeout=60,
    )  # fmt: skip


def test_run_d_returns_once_booting_even_when_stdin_is_a_socket(tmp_path: Path) -> None:
    directory = tmp_path / "vm-test"
    ours, theirs = socket.socketpair()
    try:
        with ours, theirs:
            result = start(tmp_path, "boot", theirs.fileno())
    finally:
        (directory / "stop").touch()  # the stand-in supervisor ends, whatever happened
    assert (result.returncode, result.stdout) == (0, "vm-test\n"), result.stderr
    record = json.loads((directory / "vm.json").read_text())
    assert record["state"] in ("booting", "stopped")
    deadline = time.monotonic() + 30
    while json.loads((directory / "vm.json").read_text())["state"] != "stopped":
        assert time.monotonic() < deadline, "the supervisor did not stop"
        time.sleep(0.05)


def test_a_failed_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    result = start(tmp_path, "fail", subprocess.DEVNULL)
    assert result.returncode == 125
    assert "error: the image is broken; fix the image" in result.stderr
    assert not (tmp_path / "vm-test").exists()


def test_run_d_echoes_the_guests_bytes_as_text(tmp_path: Path) -> None:
    try:
        result = start(tmp_path, "hostile", subprocess.DEVNULL, HOSTILE.hex())
    finally:
        (tmp_path / "vm-test/stop").touch()
    assert result.returncode == 0, result.stderr
    assert SHOWN in result.stderr
    assert "\x1b" not in result.stderr
