"""to-disk's installer VM is a VM of this box while it installs, but not one
a command without a VM name means: `bootc-box ssh` then finds no VM."""

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bootc_box import todisk
from bootc_box.base_disks import DiskOptions
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.manage import find_vm_when_started
from bootc_box.run_spec import RunSpec
from bootc_box.todisk import InstallSpec
from bootc_box.vms import (
    RunRecord,
    VmState,
    claim_vm_dir,
    find_vm,
    list_vms,
    new_name,
    only_vm,
    supervise_vm,
)

NATIVE = Environment(in_box=False)
IMAGE_ID = "a" * 64


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Short: a VM's sockets go below it (vms.check_socket_room).
    with tempfile.TemporaryDirectory(prefix="run", dir="/tmp") as directory:
        monkeypatch.setenv("XDG_RUNTIME_DIR", directory)
        yield


def install_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, while_installing: Callable[[], None]
) -> None:
    """to-disk's install, its installer VM's record kept as the real one is
    while `while_installing()` runs in place of the VM."""

    @contextmanager
    def store(env: Environment, image_id: str) -> Iterator[Path]:
        yield tmp_path / "store"

    def run_vm(spec: RunSpec, *, installer: bool = False) -> int:
        # launch.run_vm's claim and record, without the checks and the VM
        # (no QEMU where the unit tests run).
        directory = claim_vm_dir(NATIVE, new_name(), installer=installer)
        with supervise_vm(directory, spec.title, detached=spec.detach):
            while_installing()
        return 0

    monkeypatch.setattr(todisk, "image_only_store", store)
    monkeypatch.setattr(todisk, "run_vm", run_vm)
    target = tmp_path / "disk.raw"
    options = DiskOptions(IMAGE_ID, "quay.io/x/y:1", "raw", 1 << 20, "ext4", None, ())
    todisk.install(InstallSpec("quay.io/x/y:1"), options, target, NATIVE)


def test_ssh_without_a_name_does_not_log_in_to_a_running_installer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found: list[str] = []

    def while_installing() -> None:
        with pytest.raises(BootcBoxError, match="no VMs here") as err:
            find_vm_when_started(NATIVE, None, timeout=0.0)
        found.append(err.value.message)
        # Named, it is there: to look into an install that hangs.
        [name] = [r.name for _, r in list_vms(NATIVE) if r is not None]
        found.append(find_vm(NATIVE, name)[1].image)

    install_with(tmp_path, monkeypatch, while_installing)
    assert found[0].startswith("no VMs here but the installer of a to-disk (vm-")
    assert found[1] == "the installer of quay.io/x/y:1"


def vm(name: str, installer: bool = False) -> tuple[Path, RunRecord, bool]:
    record = RunRecord(name, "img", VmState.RUNNING, 1, 0.0, False, "2026-01-01T00:00:00+00:00")
    return Path("/run/vms") / name, record, installer


def test_without_a_name_the_one_vm_is_picked_and_installers_pass_by() -> None:
    assert only_vm([vm("web")])[1].name == "web"
    assert only_vm([vm("vm-1", installer=True), vm("web")])[1].name == "web"
    with pytest.raises(BootcBoxError) as err:
        only_vm([vm("a"), vm("vm-1", installer=True), vm("b")])
    assert (err.value.message, err.value.hint) == ("2 VMs here (a, b)", "name the one you mean")


def test_with_only_installers_there_is_no_vm_and_the_installers_are_named() -> None:
    with pytest.raises(BootcBoxError) as err:
        only_vm([vm("vm-1", installer=True), vm("vm-2", installer=True)])
    assert err.value.message == "no VMs here but the installer of a to-disk (vm-1, vm-2)"
    assert (
        err.value.hint == "start one with bootc-box run -d IMAGE, or name the installer to reach it"
    )
    with pytest.raises(BootcBoxError) as err:
        only_vm([])
    assert err.value.message == "no VMs here"
