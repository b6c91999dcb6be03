"""Choosing between KVM and TCG, and finding out whether KVM can run the guest.

/dev/kvm can exist, open and create VMs and still be unable to run an
ordinary guest (nested KVM-PVM hosts). So for `auto` the guest's own kernel
is booted once under KVM with no root file system: a working KVM runs it to
its "cannot mount root" panic within about a second, and with `panic=-1
-no-reboot` QEMU then exits 0. A broken one aborts, hangs, or reports an
internal error, which the probe sees within its deadline. A disk boot has
no kernel to hand: there the UEFI firmware is started, and it must write to
the serial console (it clears the screen first thing) within the deadline.
The verdict is kept for the host's boot (kvm_verdicts.py).
"""

import dataclasses
import enum
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from bootc_box.boot import Boot, FirmwareBoot
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kvm_verdicts import (
    ProbeResult,
    find_verdict,
    host_boot_id,
    record_verdict,
    verdict_key,
)
from bootc_box.processes import spawn, stop
from bootc_box.qemu import Accel, probe_argv

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
PROBE_TIMEOUT = 8.0


class AccelChoice(enum.Enum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


def kvm_unusable_reason(kvm: Path) -> str | None:
    """Why /dev/kvm cannot even be opened, or None."""
    if not kvm.exists():
        return f"{kvm} does not exist"
    if not os.access(kvm, os.R_OK | os.W_OK):
        return f"{kvm} is not readable and writable by this user"
    return None


def probed_boot(boot: Boot, tmp: Path) -> Boot:
    """The boot the probe makes: the firmware as the VM's (Secure Boot's in
    SMM too) writing its variables to a copy in `tmp`, never to a VM's own."""
    if not isinstance(boot, FirmwareBoot):
        return boot
    variables = tmp / "vars.fd"
    shutil.copyfile(boot.firmware.vars, variables)
    return dataclasses.replace(boot, firmware=dataclasses.replace(boot.firmware, vars=variables))


def probe_kvm(qemu: str, boot: Boot, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    with tempfile.TemporaryDirectory(prefix="bootc-box-probe-") as tmp:
        console, errors = Path(tmp, "console"), Path(tmp, "stderr")
        boot = probed_boot(boot, Path(tmp))

        def firmware_spoke() -> bool:
            return (
                isinstance(boot, FirmwareBoot) and console.exists() and console.stat().st_size > 0
            )

        with errors.open("wb") as err:
            proc = spawn(probe_argv(qemu, boot, console), stdout=err, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if b"KVM internal error" in errors.read_bytes() or firmware_spoke():
                    break
                time.sleep(0.1)
            spoke = firmware_spoke() and proc.poll() is None
        finally:
            stop(proc, timeout=2)
        if spoke:
            return ProbeResult(True, "the firmware ran under KVM")
        panicked = console.exists() and b"Kernel panic" in console.read_bytes()
        if proc.returncode == 0 and panicked:
            return ProbeResult(True, "the guest kernel ran under KVM")
        first_error = next(iter(errors.read_text(errors="replace").strip().splitlines()), "")
        if not first_error:
            return ProbeResult(
                False, f"the guest made no progress under KVM in {timeout:.0f} s", lasting=False
            )
        # Only KVM failing to run the guest says the host's KVM cannot run
        # guests; a QEMU that failed otherwise (out of memory, /dev/kvm
        # busy or denied in this box) may not fail next time.
        return ProbeResult(
            False,
            f"QEMU under KVM failed: {first_error}",
            lasting="KVM internal error" in first_error,
        )


def probe_or_recall(qemu: str, boot: Boot, env: Environment) -> ProbeResult:
    """The verdict of an earlier probe on this host boot, or a new probe's."""
    kind = "kernel"
    if isinstance(boot, FirmwareBoot):
        # Secure Boot's firmware runs in SMM too, which a KVM may not do.
        kind = "secure firmware" if boot.firmware.secure else "firmware"
    try:
        boot_id = host_boot_id()
        key = verdict_key(qemu, KVM_DEVICE, kind, boot_id)
    except OSError:
        return probe_kvm(qemu, boot)
    kept = find_verdict(env, key, boot_id)
    if kept is not None:
        log.debug("KVM verdict of an earlier run on this host boot: %s", kept.reason)
        return kept
    started = time.monotonic()
    result = probe_kvm(qemu, boot)
    log.debug("KVM probe took %.1f s: %s", time.monotonic() - started, result.reason)
    record_verdict(env, key, boot_id, result)
    return result


def choose_accel(choice: AccelChoice, qemu: str, boot: Boot, env: Environment) -> Accel:
    """The accelerator to boot with; warns loudly when `auto` falls back to TCG."""
    if choice is AccelChoice.TCG:
        return Accel.TCG
    reason = kvm_unusable_reason(KVM_DEVICE)
    if reason is None:
        result = probe_or_recall(qemu, boot, env)
        if result.ok:
            return Accel.KVM
        reason = f"KVM cannot run this guest ({result.reason})"
        fix = "use a host whose KVM runs ordinary guests"
    else:
        fix = env.kvm_hint
    if choice is AccelChoice.KVM:
        raise BootcBoxError(reason, f"{fix}, or pass --accel tcg (much slower)")
    log.warning("%s; falling back to TCG, which is much slower (to use KVM: %s)", reason, fix)
    return Accel.TCG
