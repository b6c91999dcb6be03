"""The one stop path of a machine, on real processes standing in for QEMU
(a sleep with no monitor, or one that is gone): no VM boots here."""

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootc_box.accel import Accel
from bootc_box.machine import Machine
from bootc_box.qemu import QemuSpec


@pytest.fixture
def process() -> Iterator["subprocess.Popen[bytes]"]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def machine(proc: "subprocess.Popen[bytes]", tmp_path: Path, *, graceful: bool) -> Machine:
    spec = QemuSpec(Accel.TCG, 512, 1, None, None, "", None, 2222, tmp_path / "console.log",
                    qmp_socket=tmp_path / "qmp.sock")  # fmt: skip
    return Machine(proc, (), spec, tmp_path / "qemu.log", graceful=graceful, grace=2.0)


def test_a_machine_that_is_not_graceful_is_left_for_qemu_to_be_stopped_at_once(
    process: "subprocess.Popen[bytes]", tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    machine(process, tmp_path, graceful=False).stop()
    assert process.poll() is None
    assert "Powering" not in caplog.text


def test_a_graceful_stop_whose_power_button_cannot_be_pressed_says_so_within_its_grace(
    process: "subprocess.Popen[bytes]", tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    began = time.monotonic()
    machine(process, tmp_path, graceful=True).stop()
    assert time.monotonic() - began < 2.0 + 1.0
    assert "Powering the VM off" in caplog.text
    assert "could not ask the VM to power off" in caplog.text
    assert "did not power off within 2 s; stopping it" in caplog.text


def test_a_guest_that_powered_itself_off_is_not_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gone = subprocess.Popen(["true"])
    gone.wait()
    machine(gone, tmp_path, graceful=True).stop()
    assert caplog.text == ""
