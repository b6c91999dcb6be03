"""UEFI firmware for disk boots: OVMF from Debian's ovmf package."""

import shutil
from dataclasses import dataclass
from pathlib import Path

from bootc_box.boot import Firmware
from bootc_box.errors import BootcBoxError

OVMF_DIR = Path("/usr/share/OVMF")
# Without Secure Boot: a disk bootc-box makes or a user brings boots
# whatever signatures its boot loader has, as bcvk's and podman-bootc's VMs do.
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"
# A VM's own variable store, in its directory.
EFI_VARS = "efivars.fd"


@dataclass(frozen=True)
class Ovmf:
    code: Path
    vars_template: Path


def find_ovmf(directory: Path = OVMF_DIR) -> Ovmf | None:
    ovmf = Ovmf(directory / OVMF_CODE, directory / OVMF_VARS)
    return ovmf if ovmf.code.is_file() and ovmf.vars_template.is_file() else None


def require_ovmf() -> Ovmf:
    ovmf = find_ovmf()
    if ovmf is None:
        raise BootcBoxError(
            f"no UEFI firmware: {OVMF_DIR / OVMF_CODE} is missing", "install the ovmf package"
        )
    return ovmf


def vm_firmware(ovmf: Ovmf, directory: Path, variables: Path | None = None) -> Firmware:
    """The firmware for one VM: shared code, and its own variable store (the
    firmware writes boot entries there): `variables` when the VM keeps its
    state (made from the template the first time), else a new copy in
    `directory`."""
    if variables is None:
        variables = directory / EFI_VARS
    if not variables.exists():
        # Beside it, then renamed: a VM that keeps its state must never be
        # left with half a store.
        partial = variables.with_name(f".{variables.name}.partial")
        shutil.copyfile(ovmf.vars_template, partial)
        partial.chmod(0o600)
        partial.rename(variables)
    return Firmware(ovmf.code, variables)
