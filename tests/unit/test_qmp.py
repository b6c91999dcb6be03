"""The QMP client against a real QEMU (no guest: `-machine none`)."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.processes import wait_until
from bootc_box.qmp import qmp_execute

# Never skipped: ci/prepare-host installs QEMU for the unit tests too, and a
# skip would hide that these tests did not run.
QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture
def qmp_socket(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "qmp.sock"
    assert QEMU is not None, "qemu-system-x86_64 is not installed (ci/prepare-host installs it)"
    argv = [QEMU, "-machine", "none", "-nodefaults", "-display", "none",
            "-qmp", f"unix:{sock},server=on,wait=off"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as qemu:
        try:
            wait_until(
                sock.exists, qemu, 30,
                on_exit=lambda status: AssertionError(f"QEMU exited with {status}"),
                on_timeout=lambda: AssertionError("no QMP socket"),
            )  # fmt: skip
            yield sock
        finally:
            qemu.kill()


def test_a_command_gets_its_reply(qmp_socket: Path) -> None:
    reply = qmp_execute(qmp_socket, "query-status", timeout=10)
    assert reply["return"]["status"] in ("running", "prelaunch")


def test_a_refused_command_is_an_error(qmp_socket: Path) -> None:
    with pytest.raises(BootcBoxError, match="QEMU refused a command"):
        qmp_execute(qmp_socket, "no-such-command", timeout=10)
