"""`bootc-box doctor`: what this place offers for booting VMs, and the fixes."""

import dataclasses
import json

from bootc_box.environment import Check, probe_checks, probe_environment
from bootc_box.firmware import Ovmf, find_ovmf
from bootc_box.table import format_table
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


def firmware_check(ovmf: Ovmf | None) -> Check:
    """UEFI firmware is needed for disk boots only (run --disk)."""
    if ovmf is None:
        return Check("ovmf", False, "not found (needed by run --disk)", "install the ovmf package",
                     required=False)  # fmt: skip
    return Check("ovmf", True, str(ovmf.code), required=False)


def run_doctor(as_json: bool) -> int:
    """Print the checks; non-zero when something required to boot is missing."""
    virtiofsd = find_virtiofsd()
    old = None if virtiofsd else find_old_virtiofsd()
    checks = [*probe_checks(probe_environment(), virtiofsd, old), firmware_check(find_ovmf())]
    print(render_json(checks) if as_json else render_table(checks))
    return 0 if all(c.ok for c in checks if c.required) else 1
