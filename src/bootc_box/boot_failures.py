"""A cold boot that cannot come up, recognised on the guest's console
(where the guest's journal goes too, see boot.kernel_cmdline): a panic, a
root the initramfs cannot mount, an emergency shell, an sshd that failed or
never started. The run ends with what the console said and why, instead of
waiting out --timeout."""

import re
from dataclasses import dataclass
from pathlib import Path

from bootc_box.console import ConsoleNews
from bootc_box.errors import BootcBoxError
from bootc_box.terminal import printable

SEE_BOOT = "rerun with --console to see the whole boot"


@dataclass(frozen=True)
class Failure:
    said: re.Pattern[bytes]
    cause: str
    fix: str
    # Said by the firmware: no guest ran, so none has writes to flush.
    before_os: bool = False


# The more telling cause first: an initramfs that cannot mount the root
# goes on to an emergency shell, and both appear in one look.
FAILURES = (
    # OVMF's boot manager, when Secure Boot finds no trusted signature on a
    # disk's boot loader; it would go on to network boot, and then wait.
    Failure(
        re.compile(rb"BdsDxe: failed to load Boot[0-9A-Fa-f]{4}\b[^\r\n]{0,200}: Access Denied"),
        "Secure Boot refused the disk's boot loader: it has no signature the firmware trusts",
        "boot the disk with --firmware uefi, or install a boot loader signed for Secure Boot"
        " (the shim distributions ship, signed by Microsoft's UEFI CA)",
        before_os=True,
    ),
    # systemd-boot, when shim finds no trusted signature on the kernel.
    Failure(
        re.compile(rb"Error loading \\[^\r\n]{0,200}: Security violation"),
        "Secure Boot refused the disk's kernel: shim found no signature it trusts on it",
        "boot the disk with --firmware uefi, or install a kernel its distribution signed"
        " (Debian's linux-image-*, Fedora's kernel-core) rather than one built unsigned",
        before_os=True,
    ),
    # The firmware tried every boot entry; next it waits for a key.
    Failure(
        re.compile(rb"BdsDxe: No bootable option or device was found"),
        "the firmware found nothing it could boot on the disk",
        "boot a disk made by bootc-box to-disk or bootc install, with an EFI system partition"
        " (--console shows what the firmware tried)",
        before_os=True,
    ),
    Failure(
        re.compile(rb"Kernel panic - not syncing"),
        "the guest's kernel panicked",
        SEE_BOOT,
    ),
    Failure(
        re.compile(rb"unknown filesystem type 'virtiofs'"),
        "the image's initramfs cannot mount a virtiofs root",
        "build the initramfs with virtiofs (dracut --add-drivers virtiofs), "
        "or use a kernel that has it built in",
    ),
    Failure(
        re.compile(
            rb"You are in (?:emergency|rescue) mode|Entering emergency mode|Dropping to a shell"
        ),
        "the guest stopped in an emergency shell",
        f"{SEE_BOOT}; check the --karg given and the image's units",
    ),
)

SSH_FAILURES = (
    Failure(
        re.compile(rb"Failed to start (?:ssh|sshd)\.service"),
        "sshd failed to start in the guest",
        "fix the image's sshd (the console above says why: bootc-box logs)",
    ),
)
SERIAL_NEEDS = (
    "the image's systemd must be 256 or later to take bootc-box's unit as a credential;"
    " or add openssh-server to the image"
)
SERIAL_FAILURES = (
    Failure(
        re.compile(rb"Failed to add dependency on bootc-box-exec\.service"),
        "the guest's systemd did not take bootc-box's command unit",
        SERIAL_NEEDS,
    ),
)

# systemd says this once the boot's target is reached (or its journal does,
# on the console): sshd, which that target pulls in, has started by then.
BOOTED = re.compile(rb"Startup finished in |Reached target (?:multi-user|graphical)\.target")
# How long after that an sshd that will answer has not yet: a few seconds
# under TCG on a loaded host; more means it is not there.
SSH_GRACE = 10.0
# A host that runs many boots at once runs each slower, sshd's start too
# (8 cold boots on 2 cores: 10 s was not enough): the grace grows with the
# boot's own time, half of it (a boot that took 200 s waits 100 s).
SLOW_HOST_SHARE = 0.5
LONGEST = 400


class FailureWatch:
    """Reads the console as it grows; `failure` says when the boot has failed."""

    def __init__(self, console: Path, grace: float = SSH_GRACE, *, serial: bool = False) -> None:
        self.news = ConsoleNews(console, LONGEST)
        self.grace = grace
        # What the run waits for: sshd, or bootc-box's unit (serial_exec.py).
        self.serial = serial
        self.failures = (*FAILURES, *(SERIAL_FAILURES if serial else SSH_FAILURES))
        self.watched_from: float | None = None
        self.booted_at: float | None = None
        self.found: BootcBoxError | None = None
        # The failure was the firmware's: no guest ran to power off.
        self.before_os = False

    def failure(self, now: float) -> BootcBoxError | None:
        """The boot's failure, once the console shows one; None until then."""
        if self.found is not None:
            return self.found
        if self.watched_from is None:
            self.watched_from = now
        news = self.news.read()
        for known in self.failures:
            said = known.said.search(news)
            if said is not None:
                line = line_around(news, said.start(), said.end())
                self.found = BootcBoxError(f"{known.cause} (console: {line!r})", known.fix)
                self.before_os = known.before_os
                return self.found
        if self.booted_at is None and BOOTED.search(news):
            self.booted_at = now
            self.grace = max(self.grace, SLOW_HOST_SHARE * (now - self.watched_from))
        if self.booted_at is not None and now - self.booted_at >= self.grace:
            self.found = self.silent()
        return self.found

    def silent(self) -> BootcBoxError:
        if self.serial:
            return BootcBoxError(
                "the guest finished booting but bootc-box's command unit did not start"
                f" within {self.grace:.0f} s",
                SERIAL_NEEDS,
            )
        return BootcBoxError(
            f"the guest finished booting but its sshd did not answer within {self.grace:.0f} s",
            "make sure the image has sshd enabled and not masked"
            " (ssh.service; see the --karg given)",
        )


def line_around(text: bytes, start: int, end: int) -> str:
    """The console line that holds text[start:end], shown safely and cut
    short. Found with rfind/find, not a pattern that spans the line: a
    guest can print a line 64 KiB long."""
    begin = max(text.rfind(b"\n", 0, start), text.rfind(b"\r", 0, start), start - 120 - 1) + 1
    stop = min(i for i in (text.find(b"\n", end), text.find(b"\r", end), len(text)) if i >= 0)
    return printable(text[begin : min(stop, end + 120)].decode(errors="replace")).strip()
