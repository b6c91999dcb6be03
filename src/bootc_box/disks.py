"""Disk image files: what format one is in, and whether it can be booted."""

import os
import re
from pathlib import Path

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.qemu import Disk

QCOW2_MAGIC = b"QFI\xfb"
# Every MBR, and GPT's protective MBR, ends its first sector so.
BOOT_SIGNATURE = b"\x55\xaa"
FORMATS = ("raw", "qcow2")


_SIZE = re.compile(r"(\d+)\s*(?:([kmgt])(?:i?b)?)?", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """Bytes, from `20G`, `512M`, `1T` or a plain byte count (as qemu-img)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise BootcBoxError(f"invalid {option} {text!r}", f"write it like {option} 20G or 512M")
    power: int = "_kmgt".index((match[2] or "_").lower())
    return int(match[1]) * (1 << (10 * power))


def disk_format(head: bytes) -> str | None:
    """The format of a disk image starting with `head` (its first 512
    bytes), or None when it is neither a qcow2 file nor a partitioned disk."""
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if len(head) >= 512 and head[510:512] == BOOT_SIGNATURE:
        return "raw"
    return None


def open_disk(path: Path, env: Environment, *, transient: bool = False) -> Disk:
    """`path` as a disk to boot, or a one-line error on why it cannot be."""
    if not path.exists():
        raise BootcBoxError(
            f"disk image {path} does not exist",
            f"mount it into the box, e.g. -v {path.parent}:{path.parent}"
            if env.in_box
            else "check the path",
        )
    if not path.is_file():
        raise BootcBoxError(f"{path} is not a disk image file", "pass a raw or qcow2 disk image")
    if not os.access(path, os.R_OK | (0 if transient else os.W_OK)):
        raise BootcBoxError(
            f"disk image {path} is not {'readable' if transient else 'readable and writable'}",
            "fix its permissions, or pass --transient to keep it unchanged"
            if not transient
            else "fix its permissions",
        )
    with path.open("rb") as f:
        head = f.read(512)
    found = disk_format(head)
    if found is None:
        raise BootcBoxError(
            f"{path} is not a disk image (neither qcow2 nor a partitioned raw disk)",
            "pass a disk made by bootc-box to-disk or bootc install",
        )
    return Disk(path, found, serial="root", transient=transient)
