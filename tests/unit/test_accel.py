import logging
from pathlib import Path

import pytest

from bootc_box import accel
from bootc_box.accel import AccelChoice, choose_accel, kvm_unusable_reason, probed_boot
from bootc_box.boot import Disk, Firmware, FirmwareBoot, KernelBoot
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.qemu import Accel, probe_argv

KERNEL = KernelBoot(Path("/k"), Path("/i"), Path("/r.sock"))
BOX = Environment(in_box=True)


def test_probe_boots_the_guest_kernel_to_a_panic_that_ends_qemu() -> None:
    boot = KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("/r.sock"), ("quiet",))
    argv = probe_argv("qemu", boot, Path("/t/console"))
    assert argv[argv.index("-kernel") + 1] == "/k/vmlinuz"
    assert "-initrd" not in argv
    assert "-no-reboot" in argv
    # No root to find: the kernel panics, and QEMU ends.
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert not any("vhost-user-fs" in a for a in argv)
    assert argv[argv.index("-machine") + 1] == "q35,accel=kvm"


def test_a_disk_boot_probes_with_the_firmware_and_its_own_variables() -> None:
    firmware = Firmware(Path("/fw/CODE.fd"), Path("/t/vars.fd"))
    argv = probe_argv("qemu", FirmwareBoot(firmware, Disk(Path("/d.raw"))), Path("/t/console"))
    assert "-kernel" not in argv
    assert "-blockdev" not in argv
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
        "if=pflash,format=raw,unit=1,file=/t/vars.fd",
    ]
    assert argv[argv.index("-serial") + 1] == "file:/t/console"


def test_secure_boot_firmware_is_probed_as_it_boots_in_smm_on_a_copy(tmp_path: Path) -> None:
    own = tmp_path / "efivars.fd"
    own.write_bytes(b"the VM's own")
    firmware = Firmware(Path("/fw/SECBOOT.fd"), own, secure=True)
    probe = tmp_path / "probe"
    probe.mkdir()
    boot = probed_boot(FirmwareBoot(firmware, Disk(Path("/d.raw"))), probe)
    assert isinstance(boot, FirmwareBoot)
    assert boot.firmware == Firmware(Path("/fw/SECBOOT.fd"), probe / "vars.fd", secure=True)
    assert (probe / "vars.fd").read_bytes() == b"the VM's own"
    argv = probe_argv("qemu", boot, probe / "console")
    assert argv[argv.index("smm=on") - 1 : argv.index("smm=on") + 1] == ["-machine", "smm=on"]
    assert "driver=cfi.pflash01,property=secure,value=on" in argv


def test_kvm_device_checks(tmp_path: Path) -> None:
    assert kvm_unusable_reason(tmp_path / "kvm") == f"{tmp_path}/kvm does not exist"
    device = tmp_path / "kvm"
    device.touch(mode=0o600)
    assert kvm_unusable_reason(device) is None


def test_tcg_is_chosen_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "probe_kvm", pytest.fail)
    assert choose_accel(AccelChoice.TCG, "qemu", KERNEL, BOX) is Accel.TCG


def test_missing_kvm_fails_when_kvm_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "kvm")
    with pytest.raises(BootcBoxError, match="does not exist") as err:
        choose_accel(AccelChoice.KVM, "qemu", KERNEL, BOX)
    assert err.value.hint is not None
    assert err.value.hint.startswith("add --device /dev/kvm to the podman run line")


def test_missing_kvm_falls_back_to_tcg_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "kvm")
    with caplog.at_level(logging.WARNING):
        choice = choose_accel(AccelChoice.AUTO, "qemu", KERNEL, BOX)
    assert choice is Accel.TCG
    assert "does not exist; falling back to TCG" in caplog.text
    assert "add --device /dev/kvm" in caplog.text
