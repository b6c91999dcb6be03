"""Disk image files: what format one is in, and whether it can be booted.

A disk's format is never guessed from its bytes: a raw disk's bytes are its
guest's, and a qcow2 header written there could name any host file as a
backing or data file, for QEMU to read and write. The format is what the
user said (--format), or what bootc-box recorded when it made the disk, or
else raw; a file whose header reads as qcow2 (read here, by no other
program) is taken as qcow2 only when that header names no other file, and
is refused otherwise."""

import dataclasses
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from bootc_box.boot import Disk
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError

QCOW2_MAGIC = b"QFI\xfb"
# Every MBR, and GPT's protective MBR, ends its first sector so.
BOOT_SIGNATURE = b"\x55\xaa"


_SIZE = re.compile(r"(\d+)\s*(?:([kmgt])(?:i?b)?)?", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """Bytes, from `20G`, `512M`, `1T`, or a number alone, which is MiB: the
    one rule for every size bootc-box takes (--memory's, as QEMU's -m)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise BootcBoxError(f"invalid {option} {text!r}", f"write it like {option} 20G or 512M")
    power: int = "_kmgt".index((match[2] or "m").lower())
    return int(match[1]) * (1 << (10 * power))


def checked_size(text: str | None, option: str) -> str | None:
    """`text` for a program that reads sizes itself (bootc reads
    --root-size), once it reads as a size: refused here, not by the
    installer a minute later; a number alone gets its unit, MiB."""
    if text is None:
        return None
    parse_size(text, option)
    return f"{text.strip()}M" if text.strip().isdigit() else text


@dataclass(frozen=True)
class Qcow2Header:
    """The other files a qcow2 file's header names. A data file of "" is
    one the header says there is, without naming it."""

    backing_file: str | None
    data_file: str | None


# The header is read here, not by qemu-img: it may be a guest's bytes, and
# qemu-img's own parser has been the way in (CVE-2024-4467). Only so much is
# read, and nothing it names is ever opened.
QCOW2_HEAD = 64 << 10  # QEMU's default cluster, where qemu-img puts it all
_CLUSTER_BITS = range(9, 22)  # 512 B to 2 MiB: what QEMU opens
_BACKING_NAME_MAX = 1023  # QEMU refuses longer
_V2_HEADER_LENGTH, _V3_HEADER_MIN = 72, 104
_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit 2
_EXT_END, _EXT_DATA_FILE_NAME = 0, 0x44415441


def parse_qcow2_header(head: bytes) -> Qcow2Header | None:
    """The files named by the qcow2 header at the start of `head` (a file's
    first bytes, as in QEMU's docs/interop/qcow2.rst); None without the
    qcow2 magic. Raises ValueError, saying why in a few words, where QEMU
    would refuse the header, or where it reaches past QCOW2_HEAD."""
    if not head.startswith(QCOW2_MAGIC):
        return None
    # QEMU reads a file's end as zeros to the size it asked for.
    head = head[:QCOW2_HEAD].ljust(QCOW2_HEAD, b"\0")
    version, backing_offset, backing_size, cluster_bits = struct.unpack_from(">IQII", head, 4)
    if version not in (2, 3):
        raise ValueError(f"its version is {version}, not 2 or 3")
    if cluster_bits not in _CLUSTER_BITS:
        raise ValueError("its cluster size is not 512 B to 2 MiB")
    cluster_size = 1 << cluster_bits
    incompatible, header_length = 0, _V2_HEADER_LENGTH
    if version == 3:
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        (header_length,) = struct.unpack_from(">I", head, 100)
        if header_length < _V3_HEADER_MIN:
            raise ValueError(f"its header is shorter than {_V3_HEADER_MIN} bytes")
    if header_length > cluster_size:
        raise ValueError("its header is larger than its cluster")
    backing_file = None
    if backing_offset:
        if backing_offset > cluster_size:
            raise ValueError("its backing file name lies past its first cluster")
        if backing_size > _BACKING_NAME_MAX:
            raise ValueError(f"its backing file name is longer than {_BACKING_NAME_MAX} bytes")
        if backing_offset + backing_size > QCOW2_HEAD:
            raise ValueError("its backing file name lies past its first 64 KiB")
        backing_file = _text(head[backing_offset : backing_offset + backing_size])
    data_file = _data_file_name(head, header_length, backing_offset or cluster_size)
    if data_file is None and incompatible & _EXTERNAL_DATA_FILE:
        data_file = ""
    return Qcow2Header(backing_file, data_file)


def _data_file_name(head: bytes, start: int, end: int) -> str | None:
    """The external data file name among the header extensions from
    `start` on (each: type, length, data padded to 8 bytes), up to the end
    extension or `end` (QEMU's bounds). Even without the data file flag
    (when QEMU ignores it), a name is taken as meant."""
    offset, name = start, None
    while offset < end:
        if offset + 8 > QCOW2_HEAD:
            raise ValueError("its header extends past its first 64 KiB")
        kind, length = struct.unpack_from(">II", head, offset)
        offset += 8
        if offset > end or length > end - offset:
            raise ValueError("a header extension is too large")
        if kind == _EXT_END:
            break
        if offset + length > QCOW2_HEAD:
            raise ValueError("its header extends past its first 64 KiB")
        if kind == _EXT_DATA_FILE_NAME:
            name = _text(head[offset : offset + length])
        offset += (length + 7) & ~7
    return name


def _text(name: bytes) -> str:
    # For messages only, never to open: bytes that are no UTF-8 show as such.
    return name.decode(errors="replace")


def find_qcow2_header(path: Path) -> Qcow2Header | None:
    """What the qcow2 header of `path` names; None when it has none."""
    with path.open("rb") as f:
        head = f.read(QCOW2_HEAD)
    try:
        return parse_qcow2_header(head)
    except ValueError as e:
        raise BootcBoxError(
            f"{path} starts like a qcow2 image but cannot be read as qcow2: {e}",
            "pass --format raw if it is a raw disk",
        ) from None


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
    if header.data_file is not None:
        refusal = f"keeps its data in {header.data_file!r}"
        if not header.data_file:  # the flag alone: QEMU would want one given
            refusal = "keeps its data in another file"
    elif header.backing_file is not None and not disk.backing:
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
