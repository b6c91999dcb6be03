"""Recognising a boot that cannot come up from what its console says."""

from pathlib import Path

import pytest

from bootc_box.boot_failures import FailureWatch
from tests.unit.guest import HOSTILE

# What Debian trixie's systemd and dracut print (seen in the e2e runs).
EMERGENCY = b'You are in emergency mode. After logging in, type "journalctl -xb" to view\r\n'
NO_VIRTIOFS = (
    b"[    4.1] dracut-mount[212]: mount: /sysroot: unknown filesystem type 'virtiofs'.\r\n"
    b"[    4.2] dracut: Warning: Entering emergency mode. Exit the shell to continue.\r\n"
)
STARTED = b"[   21.9] systemd[1]: Startup finished in 3.1s (kernel) + 18.7s (userspace) = 21.8s.\n"


@pytest.fixture
def console(tmp_path: Path) -> Path:
    return tmp_path / "console.log"


def say(console: Path, text: bytes) -> None:
    with console.open("ab") as file:
        file.write(text)


def test_a_boot_going_well_is_no_failure(console: Path) -> None:
    watch = FailureWatch(console)
    assert watch.failure(0.0) is None  # no console yet
    say(console, b"[    0.0] Linux version 6.12\n[  OK  ] Reached target basic.target\n")
    assert watch.failure(1.0) is None


def test_an_emergency_shell_ends_the_boot_with_the_console_line(console: Path) -> None:
    say(console, b"booting\n" + EMERGENCY + b"Press Enter for maintenance\n")
    failure = FailureWatch(console).failure(0.0)
    assert failure is not None
    assert failure.message == (
        "the guest stopped in an emergency shell (console: 'You are in emergency mode."
        ' After logging in, type "journalctl -xb" to view\')'
    )
    assert failure.hint is not None
    assert "--console" in failure.hint


def test_a_root_the_initramfs_cannot_mount_is_the_cause_not_the_shell(console: Path) -> None:
    say(console, NO_VIRTIOFS)
    failure = FailureWatch(console).failure(0.0)
    assert failure is not None
    assert failure.message.startswith("the image's initramfs cannot mount a virtiofs root")
    assert "dracut --add-drivers virtiofs" in str(failure.hint)


def test_a_phrase_split_between_two_looks_is_found(console: Path) -> None:
    watch = FailureWatch(console)
    say(console, b"x" * 100_000 + b"[ 9.9] Kernel pan")
    assert watch.failure(0.0) is None
    say(console, b"ic - not syncing: VFS: Unable to mount root fs\n")
    failure = watch.failure(1.0)
    assert failure is not None
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in failure.message


# (when the watch began, when the boot finished, the grace given, the wait):
# a boot of 200 s (eight sharing two cores) gives sshd half its time.
@pytest.mark.parametrize(
    ("began", "booted", "grace", "waits"), [(100.0, 100.0, 20.0, 20), (0.0, 200.0, 10.0, 100)]
)
def test_an_sshd_that_never_answers_after_the_boot_ends_it_after_a_grace(
    console: Path, began: float, booted: float, grace: float, waits: int
) -> None:
    watch = FailureWatch(console, grace=grace)
    if began < booted:
        assert watch.failure(began) is None
    say(console, STARTED)
    assert watch.failure(booted) is None
    assert watch.failure(booted + waits - 1) is None
    failure = watch.failure(booted + waits)
    assert failure is not None
    assert f"finished booting but its sshd did not answer within {waits} s" in failure.message
    assert "masked" in str(failure.hint)


def test_an_sshd_that_failed_says_so(console: Path) -> None:
    say(console, b"[FAILED] Failed to start ssh.service - OpenBSD Secure Shell server.\n")
    failure = FailureWatch(console).failure(0.0)
    assert failure is not None
    assert failure.message.startswith("sshd failed to start in the guest (console: '[FAILED]")


def test_a_hostile_console_line_is_quoted_short_and_harmless(console: Path) -> None:
    say(console, HOSTILE * 500 + b"x" * 5000 + EMERGENCY.rstrip() + b"y" * 5000 + HOSTILE * 500)
    failure = FailureWatch(console).failure(0.0)
    assert failure is not None
    assert len(failure.message) < 400
    assert "\x1b" not in failure.message
    assert "\x9b" not in failure.message
    assert "You are in emergency mode" in failure.message


# What OVMF printed for the installable fixture's unsigned systemd-boot
# under --firmware uefi-secure (seen in the e2e run).
REFUSED = (
    b'BdsDxe: loading Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x1,0x0)\r\n'
    b'BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x1,0x0):'
    b" Access Denied\r\n"
)


def test_secure_boot_refusing_the_loader_ends_the_boot_with_the_firmwares_line(
    console: Path,
) -> None:
    watch = FailureWatch(console)
    say(console, REFUSED[:60])
    assert watch.failure(0.0) is None
    say(console, REFUSED[60:])
    failure = watch.failure(1.0)
    assert failure is not None
    assert failure.message == (
        "Secure Boot refused the disk's boot loader: it has no signature the firmware trusts"
        ' (console: \'BdsDxe: failed to load Boot0001 "UEFI Misc Device" from'
        " PciRoot(0x0)/Pci(0x1,0x0): Access Denied')"
    )
    assert "--firmware uefi" in str(failure.hint)
    # No guest ran: nothing to power off.
    assert watch.before_os
    guest = console.with_name("guest.log")
    say(guest, EMERGENCY)
    shell = FailureWatch(guest)
    assert shell.failure(0.0) is not None
    assert not shell.before_os


def test_a_refused_kernel_is_the_cause_not_the_firmware_giving_up(console: Path) -> None:
    """What shim, systemd-boot and OVMF printed for a signed chain whose
    kernel had no signature (seen under --firmware uefi-secure)."""
    say(console, b"BdsDxe: starting Boot0001 from PciRoot(0x0)/Pci(0x1,0x0)\r\n"
        b"Verification failed: Security Policy Violation\r\n"
        b"../src/boot/boot.c:2576@image_start: Error loading \\vmlinuz: Security violation\r\n"
        b"BdsDxe: No bootable option or device was found.\r\n")  # fmt: skip
    watch = FailureWatch(console)
    failure = watch.failure(0.0)
    assert failure is not None
    assert failure.message.startswith("Secure Boot refused the disk's kernel: shim found no")
    assert "vmlinuz: Security violation" in failure.message
    assert watch.before_os


def test_a_disk_with_nothing_to_boot_ends_when_the_firmware_gives_up(console: Path) -> None:
    say(console, b"BdsDxe: No bootable option or device was found.\r\n"
        b"BdsDxe: Press any key to enter the Boot Manager Menu.\r\n")  # fmt: skip
    watch = FailureWatch(console)
    failure = watch.failure(0.0)
    assert failure is not None
    assert failure.message.startswith("the firmware found nothing it could boot on the disk")
    assert watch.before_os
