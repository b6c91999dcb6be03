"""`bootc-box doctor`: what this place offers for booting VMs, and the fixes."""

import dataclasses
import json
from pathlib import Path

from bootc_box.environment import Check, probe_checks, probe_environment
from bootc_box.firmware import FirmwareChoice, Ovmf, find_ovmf, ovmf_files
from bootc_box.table import format_table
from bootc_box.tpm import find_swtpm
from bootc_box.virtiofsd import find_old_virtiofsd, find_virtiofsd


def render_table(checks: list[Check]) -> str:
    rows = [("CHECK", "STATUS", "DETAIL", "FIX")]
    for c in checks:
        # A check with no fix only informs: nothing is wrong.
        status = "ok" if c.ok else "MISSING" if c.required else "warning" if c.fix else "info"
        rows.append((c.name, status, c.detail, "" if c.ok else c.fix))
    return format_table(rows)


def render_json(checks: list[Check]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in checks], indent=2)


def firmware_check(ovmf: Ovmf | None, choice: FirmwareChoice = FirmwareChoice.UEFI) -> Check:
    """UEFI firmware is needed for disk boots only (run --disk); its Secure
    Boot files for --firmware uefi-secure only."""
    name, needed = "ovmf", "run --disk"
    if choice.secure:
        name, needed = "ovmf secure boot", "--firmware uefi-secure"
    if ovmf is None:
        files = ovmf_files(choice)
        return Check(name, False, f"{files.code.name} or {files.vars_template.name} not found"
                     f" (needed by {needed})", "install the ovmf package",
                     required=False)  # fmt: skip
    detail = f"{ovmf.code}, {ovmf.vars_template.name}" if choice.secure else str(ovmf.code)
    return Check(name, True, detail, required=False)


def tpm_check(swtpm: Path | None) -> Check:
    if swtpm is None:
        return Check("swtpm", False, "not found (needed by --tpm)", "install the swtpm package",
                     required=False)  # fmt: skip
    return Check("swtpm", True, str(swtpm), required=False)


def run_doctor(as_json: bool) -> int:
    """Print the checks; non-zero when something required to boot is missing."""
    virtiofsd = find_virtiofsd()
    old = None if virtiofsd else find_old_virtiofsd()
    secure = FirmwareChoice.UEFI_SECURE
    checks = [
        *probe_checks(probe_environment(), virtiofsd, old),
        firmware_check(find_ovmf()),
        firmware_check(find_ovmf(secure), secure),
        tpm_check(find_swtpm()),
    ]
    print(render_json(checks) if as_json else render_table(checks))
    return 0 if all(c.ok for c in checks if c.required) else 1
