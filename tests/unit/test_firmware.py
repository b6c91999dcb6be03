"""UEFI firmware: --firmware's names, Debian's OVMF files for each, a VM's
own variable store."""

from pathlib import Path

import pytest

from bootc_box.doctor import firmware_check
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import FirmwareChoice, find_ovmf, parse_firmware, vm_firmware


def test_bcvks_names_are_taken_and_others_refused_with_the_choices() -> None:
    assert parse_firmware("uefi-secure") is FirmwareChoice.UEFI_SECURE
    assert parse_firmware("uefi-insecure") is FirmwareChoice.UEFI
    with pytest.raises(BootcBoxError, match="invalid --firmware 'bios'") as err:
        parse_firmware("bios")
    assert err.value.hint == "use one of uefi, uefi-secure, uefi-insecure"


@pytest.fixture
def ovmf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "OVMF"
    directory.mkdir()
    for name in ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE_4M.secboot.fd"):
        (directory / name).write_bytes(name.encode())
    return directory


def test_secure_boot_takes_the_smm_code_and_the_microsoft_enrolled_store(ovmf_dir: Path) -> None:
    plain = find_ovmf(FirmwareChoice.UEFI, ovmf_dir)
    assert plain is not None
    assert (plain.code.name, plain.vars_template.name, plain.secure) == (
        "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", False,
    )  # fmt: skip
    # The .ms store is missing: no Secure Boot, and doctor says which file.
    assert find_ovmf(FirmwareChoice.UEFI_SECURE, ovmf_dir) is None
    (ovmf_dir / "OVMF_VARS_4M.ms.fd").write_bytes(b"ms")
    secure = find_ovmf(FirmwareChoice.UEFI_SECURE, ovmf_dir)
    assert secure is not None
    assert (secure.code.name, secure.vars_template.name, secure.secure) == (
        "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd", True,
    )  # fmt: skip
    check = firmware_check(secure, FirmwareChoice.UEFI_SECURE)
    assert (check.name, check.ok, check.required) == ("ovmf secure boot", True, False)
    missing = firmware_check(None, FirmwareChoice.UEFI_SECURE)
    assert not missing.ok
    assert missing.detail == (
        "OVMF_CODE_4M.secboot.fd or OVMF_VARS_4M.ms.fd not found (needed by --firmware uefi-secure)"
    )


def test_a_vm_gets_its_own_store_from_the_template_once(ovmf_dir: Path, tmp_path: Path) -> None:
    (ovmf_dir / "OVMF_VARS_4M.ms.fd").write_bytes(b"ms")
    ovmf = find_ovmf(FirmwareChoice.UEFI_SECURE, ovmf_dir)
    assert ovmf is not None
    firmware = vm_firmware(ovmf, tmp_path)
    assert firmware.secure
    assert firmware.vars.read_bytes() == b"ms"
    assert firmware.vars.stat().st_mode & 0o777 == 0o600
    firmware.vars.write_bytes(b"written by the firmware")
    # A kept VM's store is its own from then on.
    again = vm_firmware(ovmf, tmp_path, firmware.vars)
    assert again.vars.read_bytes() == b"written by the firmware"


def test_a_store_planted_as_a_link_is_refused(ovmf_dir: Path, tmp_path: Path) -> None:
    """A kept VM's store lies in /cache, which other boxes may write: QEMU
    must not write where a link points."""
    ovmf = find_ovmf(FirmwareChoice.UEFI, ovmf_dir)
    assert ovmf is not None
    victim = tmp_path / "victim"
    victim.write_bytes(b"not firmware's")
    (tmp_path / "vm").mkdir()
    planted = tmp_path / "vm" / "efivars.fd"
    planted.symlink_to(victim)
    with pytest.raises(BootcBoxError, match="is not a file bootc-box made"):
        vm_firmware(ovmf, tmp_path, planted)
    assert victim.read_bytes() == b"not firmware's"
