from pathlib import Path

import pytest

from bootc_box.disks import disk_format, open_disk, parse_size
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError

BOX = Environment(in_box=True)
HOST = Environment(in_box=False)


def mbr(size: int = 4096) -> bytes:
    head = bytearray(size)
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def test_formats_are_told_by_their_first_sector() -> None:
    assert disk_format(b"QFI\xfb\x00\x00\x00\x03" + bytes(504)) == "qcow2"
    assert disk_format(mbr()[:512]) == "raw"
    assert disk_format(bytes(512)) is None  # an empty file: no partition table
    assert disk_format(b"#!/bin/sh\n") is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("20G", 20 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4096", 4096), ("10GiB", 10 << 30),
     ("2g", 2 << 30), ("64k", 64 << 10)],
)  # fmt: skip
def test_sizes_read_as_qemu_img_reads_them(text: str, size: int) -> None:
    assert parse_size(text, "--disk-size") == size


@pytest.mark.parametrize("text", ["", "0", "ten", "1.5G", "-1G", "10X", "20b", "20ib"])
def test_bad_sizes_say_how_to_write_one(text: str) -> None:
    with pytest.raises(BootcBoxError, match="invalid --disk-size") as err:
        parse_size(text, "--disk-size")
    assert err.value.hint == "write it like --disk-size 20G or 512M"


def test_a_raw_disk_opens_with_its_format_and_the_root_serial(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(mbr())
    disk = open_disk(path, HOST)
    assert (disk.path, disk.format, disk.serial, disk.transient) == (path, "raw", "root", False)
    assert open_disk(path, HOST, transient=True).transient


def test_a_missing_disk_in_the_box_names_the_mount(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match="does not exist") as err:
        open_disk(tmp_path / "nope.raw", BOX)
    assert err.value.hint == f"mount it into the box, e.g. -v {tmp_path}:{tmp_path}"


def test_a_file_that_is_no_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(BootcBoxError, match="is not a disk image"):
        open_disk(path, HOST)
    with pytest.raises(BootcBoxError, match="is not a disk image file"):
        open_disk(tmp_path, HOST)
