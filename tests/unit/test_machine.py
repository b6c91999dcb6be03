"""The one stop path of a machine. Its power-off runs on real processes
standing in for QEMU (a sleep with no monitor, or one that is gone); the
order in which start_machine starts and stops its parts is checked with
recording stand-ins for QEMU, passt and virtiofsd, as no VM boots in unit tests
(the e2e tests boot real ones)."""

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

from bootc_box import console as console_module
from bootc_box import machine as machine_module
from bootc_box.boot import KernelBoot
from bootc_box.console import LOG_LIMIT_VARIABLE, rotated
from bootc_box.errors import BootcBoxError
from bootc_box.machine import BootAgain, FileServer, Machine, start_machine
from bootc_box.network import Network, PortInUse
from bootc_box.qemu import Accel, QemuSpec
from bootc_box.signals import Terminated
from bootc_box.virtiofsd import Sandbox, VirtiofsdSpec


@pytest.fixture
def process() -> Iterator["subprocess.Popen[bytes]"]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def qemu_spec(tmp_path: Path) -> QemuSpec:
    boot = KernelBoot(tmp_path / "vmlinuz", tmp_path / "initramfs.img", tmp_path / "rootfs.sock")
    return QemuSpec(Accel.TCG, 512, 1, boot, Network(tmp_path / "net.sock", 2222),
                    tmp_path / "console.log", qmp_socket=tmp_path / "qmp.sock")  # fmt: skip


def machine(proc: "subprocess.Popen[bytes]", tmp_path: Path, *, graceful: bool) -> Machine:
    return Machine(proc, (), qemu_spec(tmp_path), tmp_path / "qemu.log", graceful=graceful,
                   grace=2.0)  # fmt: skip


class Running:
    """What the stand-in QEMU yields: a process that runs until stopped."""

    def poll(self) -> None:
        return None


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """start_machine with QEMU, virtiofsd, QMP and the power button recorded."""
    happened: list[str] = []

    @contextmanager
    def start_virtiofsd(
        spec: VirtiofsdSpec, log_file: Path, sandboxes: tuple[Sandbox, ...]
    ) -> Iterator[object]:
        happened.append(f"start {spec.shared_dir.name}")
        try:
            # What start_file_servers reads: the sandbox the server runs in.
            yield SimpleNamespace(spec=spec)
        finally:
            happened.append(f"stop {spec.shared_dir.name}")

    @contextmanager
    def start_passt(network: Network, log_file: Path) -> Iterator[None]:
        happened.append("start network")
        try:
            yield
        finally:
            happened.append("stop network")

    @contextmanager
    def start_qemu(spec: QemuSpec, log_file: Path, binary: str) -> Iterator[Running]:
        happened.append("start qemu")
        try:
            yield Running()
        finally:
            happened.append("stop qemu")

    def power_off(vm: object, qmp_socket: Path, grace: float) -> bool:
        happened.append(f"power off within {grace:.0f} s")
        return True

    monkeypatch.setattr(machine_module, "start_virtiofsd", start_virtiofsd)
    monkeypatch.setattr(machine_module, "start_qemu", start_qemu)
    monkeypatch.setattr(machine_module, "start_passt", start_passt)
    monkeypatch.setattr(machine_module, "wait_for_monitor", lambda *a: happened.append("monitor"))
    monkeypatch.setattr(machine_module, "power_off", power_off)
    return happened


def servers(tmp_path: Path) -> tuple[FileServer, ...]:
    return tuple(
        FileServer(VirtiofsdSpec(Path(f"/{name}"), tmp_path / f"{name}.sock"), tmp_path / "log")
        for name in ("root", "bind0")
    )


@pytest.mark.parametrize("ending", [None, Terminated, KeyboardInterrupt, BootcBoxError])
def test_a_graceful_machine_is_powered_off_before_qemu_and_then_its_servers_stop(
    events: list[str], tmp_path: Path, ending: type[BaseException] | None
) -> None:
    with (
        pytest.raises(ending) if ending else nullcontext(),
        start_machine(qemu_spec(tmp_path), servers(tmp_path), "qemu", tmp_path / "q.log",
                      graceful=False, grace=8.0) as started,
    ):  # fmt: skip
        events.append("up")
        started.graceful = True  # as a run that stays up, once the guest answers
        if ending:
            raise ending("ended")
    assert events == [
        "start network", "start root", "start bind0", "start qemu", "monitor", "up",
        "power off within 8 s", "stop qemu", "stop bind0", "stop root", "stop network",
    ]  # fmt: skip


def test_a_machine_that_is_not_graceful_stops_at_once(events: list[str], tmp_path: Path) -> None:
    with start_machine(qemu_spec(tmp_path), (), "qemu", tmp_path / "q.log", graceful=False,
                       grace=8.0):  # fmt: skip
        pass
    assert events == ["start network", "start qemu", "monitor", "stop qemu", "stop network"]


def test_the_consoles_logs_are_kept_in_bounds_for_as_long_as_the_machine_runs(
    events: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the run waits for SSH or a command, as while it waits for the
    VM to end: the console and what it is copied into (a detached
    supervisor's log) grow all the while."""
    monkeypatch.setenv(LOG_LIMIT_VARIABLE, "100")
    monkeypatch.setattr(console_module, "ROTATE_EVERY", 0.01)
    spec = qemu_spec(tmp_path)
    logs = (spec.console_log, tmp_path / "supervisor.log")
    with start_machine(spec, (), "qemu", tmp_path / "q.log", graceful=False, grace=8.0,
                       console_copies=logs[1:]):  # fmt: skip
        for log in logs:
            log.write_bytes(b"x" * 101)
        deadline = time.monotonic() + 10
        while not all(rotated(log).exists() for log in logs):
            assert time.monotonic() < deadline, "the logs were not rotated"
            time.sleep(0.01)
    assert [log.stat().st_size for log in logs] == [0, 0]


@pytest.mark.parametrize(("port", "raised"), [(2222, BootAgain), (8080, PortInUse)])
def test_a_lost_race_for_the_ssh_port_boots_again_and_nothing_is_powered_off(
    events: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    port: int,
    raised: type[BootcBoxError],
) -> None:
    def taken(*args: object) -> None:
        raise PortInUse(port)

    monkeypatch.setattr(machine_module, "start_passt", taken)
    with (
        pytest.raises(raised) as err,
        start_machine(qemu_spec(tmp_path), servers(tmp_path)[:1], "qemu", tmp_path / "q.log",
                      graceful=True, grace=8.0),
    ):  # fmt: skip
        raise AssertionError("the machine never came up")
    assert type(err.value) is raised
    # passt binds the ports before anything else starts.
    assert events == []


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
