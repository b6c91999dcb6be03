"""UEFI firmware for disk boots: OVMF from Debian's ovmf package, without
Secure Boot (--firmware uefi) or with it on (--firmware uefi-secure)."""

import enum
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootc_box.boot import Firmware
from bootc_box.errors import BootcBoxError

OVMF_DIR = Path("/usr/share/OVMF")
# A VM's own variable store, in its directory.
EFI_VARS = "efivars.fd"


class FirmwareChoice(enum.Enum):
    """--firmware, with bcvk's names."""

    # A disk bootc-box makes or a user brings boots whatever signatures its
    # boot loader has, as bcvk's uefi-insecure and podman-bootc's VMs do.
    UEFI = "uefi"
    # Secure Boot on, with Microsoft's keys enrolled (what real machines
    # ship): the boot loader must be signed (shim, as distributions ship it).
    UEFI_SECURE = "uefi-secure"

    @property
    def secure(self) -> bool:
        return self is FirmwareChoice.UEFI_SECURE


# bcvk's name for plain UEFI.
FIRMWARE_ALIASES = {"uefi-insecure": FirmwareChoice.UEFI}
FIRMWARE_CHOICES = (*(c.value for c in FirmwareChoice), *FIRMWARE_ALIASES)


def parse_firmware(text: str) -> FirmwareChoice:
    try:
        return FIRMWARE_ALIASES.get(text) or FirmwareChoice(text)
    except ValueError:
        raise BootcBoxError(
            f"invalid --firmware {text!r}", f"use one of {', '.join(FIRMWARE_CHOICES)}"
        ) from None


@dataclass(frozen=True)
class Ovmf:
    code: Path
    vars_template: Path
    secure: bool = False


# Debian's names (README.Debian of ovmf): the secboot code needs SMM, and
# the .ms store has Debian's PK, Microsoft's KEK and db, and Secure Boot on.
FILES = {
    FirmwareChoice.UEFI: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    FirmwareChoice.UEFI_SECURE: ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
}


def ovmf_files(choice: FirmwareChoice, directory: Path = OVMF_DIR) -> Ovmf:
    code, template = FILES[choice]
    return Ovmf(directory / code, directory / template, choice.secure)


def find_ovmf(
    choice: FirmwareChoice = FirmwareChoice.UEFI, directory: Path = OVMF_DIR
) -> Ovmf | None:
    ovmf = ovmf_files(choice, directory)
    return ovmf if ovmf.code.is_file() and ovmf.vars_template.is_file() else None


def require_ovmf(choice: FirmwareChoice = FirmwareChoice.UEFI) -> Ovmf:
    ovmf = find_ovmf(choice)
    if ovmf is None:
        files = ovmf_files(choice)
        missing = files.code if not files.code.is_file() else files.vars_template
        raise BootcBoxError(
            f"no UEFI firmware for --firmware {choice.value}: {missing} is missing",
            "install the ovmf package",
        )
    return ovmf


def vm_firmware(ovmf: Ovmf, directory: Path, variables: Path | None = None) -> Firmware:
    """The firmware for one VM: shared code, and its own variable store (the
    firmware writes boot entries there): `variables` when the VM keeps its
    state (made from the template the first time), else a new copy in
    `directory`."""
    if variables is None:
        variables = directory / EFI_VARS
    if variables.is_symlink() or (variables.exists() and not variables.is_file()):
        # A kept VM's lies in /cache, which other boxes may write: QEMU
        # would write wherever a planted link points.
        raise BootcBoxError(
            f"the UEFI variable store {variables} is not a file bootc-box made",
            f"remove {variables} (the VM's boot entries go with it)",
        )
    if not variables.exists():
        # Beside it, then renamed: a VM that keeps its state must never be
        # left with half a store. A new file of a name of its own
        # (mkstemp: O_EXCL, 0600), never one a writer of /cache put there.
        fd, partial = tempfile.mkstemp(prefix=f".{variables.name}.", dir=variables.parent)
        try:
            with os.fdopen(fd, "wb") as out, ovmf.vars_template.open("rb") as template:
                shutil.copyfileobj(template, out)
            os.rename(partial, variables)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return Firmware(ovmf.code, variables, ovmf.secure)
