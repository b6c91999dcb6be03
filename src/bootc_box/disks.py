"""Disk image files: what format one is in, and whether it can be booted.

A disk's format is never guessed from its bytes: a raw disk's bytes are its
guest's, and a qcow2 header written there could name any host file as a
backing or data file, for QEMU to read and write. The format is what the
user said (--format), or what bootc-box recorded when it made the disk, or
else raw; a file that qemu-img reads as qcow2 is taken as qcow2 only when
its header names no other file, and is refused otherwise."""

import dataclasses
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line_of
from bootc_box.qemu import Disk

QCOW2_MAGIC = b"QFI\xfb"
# Every MBR, and GPT's protective MBR, ends its first sector so.
BOOT_SIGNATURE = b"\x55\xaa"


_SIZE = re.compile(r"(\d+)\s*(?:([kmgt])(?:i?b)?)?", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """Bytes, from `20G`, `512M`, `1T` or a plain byte count (as qemu-img)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise BootcBoxError(f"invalid {option} {text!r}", f"write it like {option} 20G or 512M")
    power: int = "_kmgt".index((match[2] or "_").lower())
    return int(match[1]) * (1 << (10 * power))


@dataclass(frozen=True)
class Qcow2Header:
    """The other files a qcow2 file's header names, as qemu-img reads them."""

    backing_file: str | None
    data_file: str | None


def qemu_img_info_argv(path: Path) -> list[str]:
    # -f qcow2: no other driver reads the file (a probe could pick vmdk,
    # whose descriptor names more files). Without --backing-chain qemu-img
    # reports the backing and data files without opening them. -U: the
    # header can be read while another VM has the disk open.
    return ["qemu-img", "info", "--output=json", "-U", "-f", "qcow2", str(path)]


def parse_qcow2_info(text: str) -> Qcow2Header:
    """The files named in qemu-img info's JSON of a qcow2 file."""
    info = json.loads(text)
    data = info.get("format-specific", {}).get("data", {})
    return Qcow2Header(info.get("backing-filename"), data.get("data-file"))


def find_qcow2_header(path: Path) -> Qcow2Header | None:
    """What the qcow2 header of `path` names; None when it has none."""
    with path.open("rb") as f:
        if f.read(len(QCOW2_MAGIC)) != QCOW2_MAGIC:
            return None  # qemu-img's qcow2 driver would refuse it too
    read = subprocess.run(qemu_img_info_argv(path), capture_output=True, text=True, check=False)
    if read.returncode != 0:
        raise BootcBoxError(
            f"{path} starts like a qcow2 image but cannot be read as qcow2: "
            + last_line_of(read.stderr, f"qemu-img exited with status {read.returncode}"),
            "pass --format raw if it is a raw disk",
        )
    return parse_qcow2_info(read.stdout)


def checked_format(disk: Disk) -> str:
    """The format `disk` boots in: as said, else raw unless it is qcow2;
    qcow2 only when it names no file besides the base bootc-box gives it."""
    if disk.format == "raw":
        return "raw"
    header = find_qcow2_header(disk.path)
    if header is None:
        if disk.format == "qcow2":
            raise BootcBoxError(
                f"{disk.path} is not a qcow2 image", "pass --format raw, or leave --format out"
            )
        return "raw"
    # The names are the file's bytes, maybe a guest's: repr shows them inert.
    if header.data_file:
        refusal = f"keeps its data in {header.data_file!r}"
    elif header.backing_file and not disk.backing:
        refusal = f"has a backing file ({header.backing_file!r})"
    else:
        return "qcow2"
    raise BootcBoxError(
        f"{disk.path} is a qcow2 image that {refusal}, which bootc-box does not open",
        "pass --format raw if it is a raw disk (its guest wrote that header); else make it "
        "one whole file: qemu-img convert -O qcow2 FILE NEW.qcow2",
    )


def open_disk(disk: Disk, env: Environment) -> Disk:
    """`disk` as it boots, with its format, or a one-line error on why it cannot."""
    path, transient = disk.path, disk.transient
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
    found = checked_format(disk)
    if found == "raw":
        with path.open("rb") as f:
            # Read to refuse a file that cannot boot, never to pick a format.
            if f.read(512)[510:512] != BOOT_SIGNATURE:
                raise BootcBoxError(
                    f"{path} is not a disk image (neither qcow2 nor a partitioned raw disk)",
                    "pass a disk made by bootc-box to-disk or bootc install",
                )
    return dataclasses.replace(disk, format=found, serial="root")
