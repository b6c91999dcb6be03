import re
import subprocess
from pathlib import Path

import pytest

from bootc_box.boot import Disk, Firmware, FirmwareBoot
from bootc_box.disks import checked_size, open_disk, parse_size
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.network import Network
from bootc_box.qemu import Accel, QemuSpec, qemu_argv

BOX = Environment(in_box=True)
HOST = Environment(in_box=False)


def mbr(size: int = 4096) -> bytes:
    head = bytearray(size)
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def qcow2(path: Path, *options: str, size: str = "1M") -> Path:
    """A qcow2 file made by qemu-img (`options` as for qemu-img create)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True
    )
    return path


def guest_written(path: Path, head: Path) -> Path:
    """A raw disk whose guest wrote the bytes of the file `head` over its
    start, keeping the partition table's boot signature."""
    data = bytearray(mbr(1 << 20))
    written = head.read_bytes()[: 1 << 20]
    data[: len(written)] = written
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    return path


def booted(disk: Disk) -> list[str]:
    """The QEMU command line a disk boot of `disk` would run."""
    firmware = Firmware(Path("/fw/CODE.fd"), Path("/vm/efivars.fd"))
    spec = QemuSpec(
        accel=Accel.TCG, memory_mib=2048, cpus=2, boot=FirmwareBoot(firmware, disk),
        network=Network(Path("/run/net.sock"), 2222), console_log=Path("/run/console.log"),
    )  # fmt: skip
    return qemu_argv(spec, "qemu")


@pytest.mark.parametrize(
    ("text", "size"),
    [("20G", 20 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("4096", 4096 << 20),
     ("10GiB", 10 << 30), ("2g", 2 << 30), ("64k", 64 << 10)],
)  # fmt: skip
def test_sizes_read_with_one_rule_a_number_alone_is_mib(text: str, size: int) -> None:
    assert parse_size(text, "--disk-size") == size


def test_a_size_for_bootc_gets_its_unit() -> None:
    assert checked_size("4096", "--root-size") == "4096M"
    assert checked_size("10G", "--root-size") == "10G"
    assert checked_size(None, "--root-size") is None


@pytest.mark.parametrize("text", ["", "0", "ten", "1.5G", "-1G", "10X", "20b", "20ib"])
def test_bad_sizes_say_how_to_write_one(text: str) -> None:
    with pytest.raises(BootcBoxError, match="invalid --disk-size") as err:
        parse_size(text, "--disk-size")
    assert err.value.hint == "write it like --disk-size 20G or 512M"


def test_a_raw_disk_opens_with_its_format_and_the_root_serial(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(mbr())
    disk = open_disk(Disk(path, None), HOST)
    assert (disk.path, disk.format, disk.serial, disk.transient) == (path, "raw", "root", False)
    assert open_disk(Disk(path, None, transient=True), HOST).transient


def test_a_missing_disk_in_the_box_names_the_mount(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match="does not exist") as err:
        open_disk(Disk(tmp_path / "nope.raw", None), BOX)
    assert err.value.hint == f"mount it into the box, e.g. -v {tmp_path}:{tmp_path}"


def test_a_file_that_is_no_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(BootcBoxError, match="is not a disk image"):
        open_disk(Disk(path, None), HOST)
    with pytest.raises(BootcBoxError, match="is not a disk image file"):
        open_disk(Disk(tmp_path, None), HOST)


def test_a_raw_disk_whose_guest_wrote_a_qcow2_header_never_opens_the_file_it_names(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    header = qcow2(tmp_path / "header", "-b", str(secret), "-F", "raw")
    disk = guest_written(tmp_path / "disk.raw", header)
    with pytest.raises(BootcBoxError, match="has a backing file") as err:
        open_disk(Disk(disk, None), HOST)
    assert "--format raw" in (err.value.hint or "")
    # Said to be raw, it is raw: no qcow2 driver ever reads its header.
    opened = open_disk(Disk(disk, "raw"), HOST)
    assert opened.format == "raw"
    assert not any("qcow2" in arg or str(secret) in arg for arg in booted(opened))


def test_a_qcow2_header_naming_an_external_data_file_is_refused_even_when_said_qcow2(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    header = qcow2(tmp_path / "header", "-o", f"data_file={victim}")
    disk = guest_written(tmp_path / "disk.raw", header)
    for said in (None, "qcow2"):
        with pytest.raises(BootcBoxError, match=re.escape(f"keeps its data in {str(victim)!r}")):
            open_disk(Disk(disk, said), HOST)
    with pytest.raises(BootcBoxError, match="keeps its data in"):
        open_disk(Disk(header, "qcow2"), HOST)


def test_a_qcow2_disk_on_its_own_opens_as_qcow2_with_no_backing_file(tmp_path: Path) -> None:
    path = qcow2(tmp_path / "disk.qcow2")
    for said in (None, "qcow2"):
        assert open_disk(Disk(path, said), HOST).format == "qcow2"
    with pytest.raises(BootcBoxError, match="has a backing file"):
        open_disk(
            Disk(qcow2(tmp_path / "overlay.qcow2", "-b", str(path), "-F", "qcow2"), None), HOST
        )


def test_a_disk_said_to_be_qcow2_that_is_not_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(mbr())
    with pytest.raises(BootcBoxError, match="is not a qcow2 image") as err:
        open_disk(Disk(path, "qcow2"), HOST)
    assert err.value.hint == "pass --format raw, or leave --format out"


def test_an_overlay_whose_base_bootc_box_names_opens_with_that_base(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(mbr())
    overlay = qcow2(tmp_path / "disk.qcow2", "-b", str(base), "-F", "raw", size="4K")
    disk = Disk(overlay, "qcow2", backing=Disk(base, "raw"))
    assert open_disk(disk, HOST) == Disk(overlay, "qcow2", "root", backing=Disk(base, "raw"))


def test_a_qcow2_header_qemu_img_cannot_read_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(b"QFI\xfb" + bytes(4092))
    with pytest.raises(BootcBoxError, match="cannot be read as qcow2") as err:
        open_disk(Disk(path, None), HOST)
    assert "\n" not in err.value.message
