"""What the KVM probe (accel.py) found, kept for the host's current boot.

Whether this host's KVM runs an ordinary guest does not change while it
stays up, yet the probe costs every run 1 s on a KVM that works and 2.5 s
on one that does not (KVM-PVM): half of a warm start. So a verdict is kept
in the cache under a key of the host's boot ID, the QEMU binary, /dev/kvm
and the kind of boot probed (a kernel or UEFI firmware), and later runs on
that boot take it instead of probing. A verdict from a probe that timed out
is not kept: a busy host can be slow once.

The cache may be shared and written by others: a planted verdict makes runs
use KVM where it fails (they stop with QEMU's error) or TCG where KVM works
(slower), nothing more; it is read without following links, 200 bytes at
most, and its reason is shown with control characters taken out."""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from bootc_box.cache_entries import cache_dir, open_regular, remove_entry, write_note_once
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.terminal import printable

VERDICTS = "kvm"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MAX_NOTE = 200


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    # A verdict that holds while the host stays up (not a probe that ran
    # out of time).
    lasting: bool = True


def host_boot_id() -> str:
    return BOOT_ID.read_text().strip()


def verdict_key(qemu: str, kvm: Path, kind: str, boot_id: str) -> str:
    """The probe's inputs that decide its verdict, hashed."""
    binary, device = os.stat(qemu), os.stat(kvm)
    parts = (boot_id, os.path.realpath(qemu), str(binary.st_size), str(binary.st_mtime_ns),
             str(binary.st_ino), str(device.st_rdev), kind)  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def format_verdict(boot_id: str, result: ProbeResult) -> bytes:
    text = f"{boot_id} {'ok' if result.ok else 'no'} {result.reason}"
    return text.encode()[:MAX_NOTE]


def parse_verdict(note: bytes, boot_id: str) -> ProbeResult | None:
    """A note's verdict, if it is one of this boot's. The reason goes to a
    terminal: one line, no control characters."""
    found, _, rest = note.decode(errors="replace").partition(" ")
    answer, _, reason = rest.partition(" ")
    if found != boot_id or answer not in ("ok", "no"):
        return None
    shown = " ".join(printable(reason).split())
    return ProbeResult(answer == "ok", shown or "a verdict of an earlier run")


def find_verdict(env: Environment, key: str, boot_id: str) -> ProbeResult | None:
    """The kept verdict, or None; whatever is wrong with the cache there
    (a planted link, an unreadable note), the run probes instead."""
    try:
        with open_regular(cache_dir(env, VERDICTS) / key) as note:
            return parse_verdict(note.read(MAX_NOTE), boot_id)
    except (OSError, BootcBoxError):
        return None


def record_verdict(env: Environment, key: str, boot_id: str, result: ProbeResult) -> None:
    """Keep a lasting verdict, whole or not at all; the first of runs
    probing at once wins. A cache that cannot take it (full, read-only,
    a planted link) costs the next run a probe, never this run."""
    if not result.lasting:
        return
    try:
        directory = cache_dir(env, VERDICTS)
        directory.mkdir(parents=True, exist_ok=True)
        write_note_once(directory / key, format_verdict(boot_id, result))
    except (OSError, BootcBoxError):
        pass


def prune_verdicts(env: Environment, boot_id: str) -> int:
    """Remove the verdicts of earlier boots of the host, and anything in
    their directory that is not a verdict of this one."""
    directory = cache_dir(env, VERDICTS)
    removed = 0
    for path in directory.iterdir() if directory.is_dir() else ():
        if find_verdict(env, path.name, boot_id) is None:
            remove_entry(path)
            removed += 1
    return removed
