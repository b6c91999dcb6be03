"""disks.find_qcow2_header: the files a qcow2 header names, read from its
bytes (QEMU's docs/interop/qcow2.rst) by no other program, from headers
built here by hand and, where qemu-img is installed, made by qemu-img."""

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bootc_box.boot import Disk
from bootc_box.disks import Qcow2Header, find_qcow2_header, open_disk
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError

HOST = Environment(in_box=False)
MAGIC = b"QFI\xfb"
EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit 2
DATA_FILE_NAME = 0x44415441  # header extension types
BACKING_FORMAT = 0xE2792ACA
FEATURE_TABLE = 0x6803F857
KiB = 1024


def qcow2_bytes(
    *,
    version: int = 3,
    backing: bytes | None = None,
    extensions: tuple[tuple[int, bytes], ...] = (),
    incompatible: int = 0,
    cluster_bits: int = 16,
    header_length: int = 112,
) -> bytes:
    """The start of a qcow2 file: its header, extensions (each padded to 8
    bytes, then the end one) and backing file name, as qemu-img lays them out."""
    length = 72 if version == 2 else header_length
    ext = b"".join(
        struct.pack(">II", kind, len(data)) + data + bytes(-len(data) % 8)
        for kind, data in extensions
    )
    ext += bytes(8)
    backing_offset = length + len(ext) if backing is not None else 0
    head = struct.pack(">4sIQII", MAGIC, version, backing_offset, len(backing or b""), cluster_bits)
    # size, crypt_method, l1_size, l1_table_offset, refcount_table_offset,
    # refcount_table_clusters, nb_snapshots, snapshots_offset
    head += struct.pack(">QIIQQIIQ", 1 << 20, 0, 2, 3 << 16, 1 << 16, 1, 0, 0)
    if version != 2:
        # incompatible, compatible and autoclear features, refcount_order, header_length
        head += struct.pack(">QQQII", incompatible, 0, 0, 4, header_length)
    head = head.ljust(length, b"\0") + ext + (backing or b"")
    return head.ljust(1 << cluster_bits if cluster_bits <= 16 else len(head), b"\0")


def written(tmp_path: Path, data: bytes, name: str = "disk") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refusal(tmp_path: Path, data: bytes) -> BootcBoxError:
    path = written(tmp_path, data)
    with pytest.raises(BootcBoxError, match="starts like a qcow2 image but cannot be read") as err:
        find_qcow2_header(path)
    assert "\n" not in err.value.message
    assert err.value.hint == "pass --format raw if it is a raw disk"
    return err.value


@pytest.fixture
def no_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any program started: the header may be a guest's, and qemu-img's
    own parser is what CVE-2024-4467 got through."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a program was started: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.mark.usefixtures("no_programs")
@pytest.mark.parametrize("version", [2, 3])
def test_a_header_is_read_by_no_program(tmp_path: Path, version: int) -> None:
    assert find_qcow2_header(written(tmp_path, qcow2_bytes(version=version))) == Qcow2Header(
        None, None
    )
    with_backing = qcow2_bytes(version=version, backing=b"/etc/shadow")
    assert find_qcow2_header(written(tmp_path, with_backing)) == Qcow2Header("/etc/shadow", None)


def test_a_file_without_the_magic_has_no_header(tmp_path: Path) -> None:
    assert find_qcow2_header(written(tmp_path, b"")) is None
    assert find_qcow2_header(written(tmp_path, b"QFI")) is None
    assert find_qcow2_header(written(tmp_path, bytes(4096))) is None


@pytest.mark.usefixtures("no_programs")
def test_the_data_file_name_is_found_among_other_extensions(tmp_path: Path) -> None:
    data = qcow2_bytes(
        incompatible=EXTERNAL_DATA_FILE,
        extensions=((BACKING_FORMAT, b"raw"), (FEATURE_TABLE, bytes(48)),
                    (DATA_FILE_NAME, b"/dev/sda")),
    )  # fmt: skip
    assert find_qcow2_header(written(tmp_path, data)) == Qcow2Header(None, "/dev/sda")


@pytest.mark.usefixtures("no_programs")
def test_a_data_file_flag_without_a_name_still_keeps_its_data_elsewhere(tmp_path: Path) -> None:
    path = written(tmp_path, qcow2_bytes(incompatible=EXTERNAL_DATA_FILE))
    assert find_qcow2_header(path) == Qcow2Header(None, "")
    for said in (None, "qcow2"):
        with pytest.raises(BootcBoxError, match="keeps its data in another file,"):
            open_disk(Disk(path, said), HOST)


@pytest.mark.usefixtures("no_programs")
def test_a_data_file_name_without_the_flag_is_refused_too(tmp_path: Path) -> None:
    # QEMU ignores such a name; refusing costs a file no tool makes.
    path = written(tmp_path, qcow2_bytes(extensions=((DATA_FILE_NAME, b"/dev/sda"),)))
    with pytest.raises(BootcBoxError, match="keeps its data in '/dev/sda'"):
        open_disk(Disk(path, "qcow2"), HOST)


@pytest.mark.usefixtures("no_programs")
def test_a_backing_file_name_that_is_no_text_is_shown_inert(tmp_path: Path) -> None:
    path = written(tmp_path, qcow2_bytes(backing=b"\x00/etc/\xffshadow\n"))
    header = find_qcow2_header(path)
    assert header == Qcow2Header("\x00/etc/\ufffdshadow\n", None)
    with pytest.raises(BootcBoxError, match="has a backing file") as err:
        open_disk(Disk(path, None), HOST)
    assert "\n" not in err.value.message


@pytest.mark.usefixtures("no_programs")
def test_an_empty_backing_file_name_is_still_a_backing_file(tmp_path: Path) -> None:
    path = written(tmp_path, qcow2_bytes(backing=b""))
    assert find_qcow2_header(path) == Qcow2Header("", None)
    with pytest.raises(BootcBoxError, match="has a backing file"):
        open_disk(Disk(path, None), HOST)


@pytest.mark.usefixtures("no_programs")
@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_a_version_other_than_2_or_3_is_refused_in_one_line(tmp_path: Path, version: int) -> None:
    err = refusal(tmp_path, qcow2_bytes(version=version))
    assert err.message.endswith(f"its version is {version}, not 2 or 3")


@pytest.mark.usefixtures("no_programs")
def test_a_file_that_ends_within_its_header_reads_as_zeros_there(tmp_path: Path) -> None:
    # As QEMU reads it: zeros past its end (here a 1-byte cluster, refused).
    refusal(tmp_path, MAGIC + struct.pack(">I", 3))
    assert find_qcow2_header(written(tmp_path, qcow2_bytes(version=2)[:72])) == Qcow2Header(
        None, None
    )


@pytest.mark.usefixtures("no_programs")
@pytest.mark.parametrize(
    ("data", "why"),
    [
        (qcow2_bytes(backing=b"b" * 1024), "backing file name is longer than 1023 bytes"),
        (qcow2_bytes(header_length=96), "header is shorter than 104 bytes"),
        (qcow2_bytes(header_length=1024, cluster_bits=9), "header is larger than its cluster"),
        (qcow2_bytes(backing=b"b", header_length=1024, cluster_bits=10),
         "backing file name lies past its first cluster"),
        (qcow2_bytes(cluster_bits=8), "cluster size is not 512 B to 2 MiB"),
        (qcow2_bytes(cluster_bits=22), "cluster size is not 512 B to 2 MiB"),
        (qcow2_bytes(extensions=((FEATURE_TABLE, bytes(70 * KiB)),), cluster_bits=17),
         "header extends past its first 64 KiB"),
        (qcow2_bytes(extensions=((FEATURE_TABLE, bytes(70 * KiB)),)),
         "a header extension is too large"),
    ],
)  # fmt: skip
def test_a_header_qemu_refuses_or_too_long_to_read_is_refused(
    tmp_path: Path, data: bytes, why: str
) -> None:
    assert refusal(tmp_path, data).message.endswith(why)


@pytest.mark.usefixtures("no_programs")
def test_only_the_first_64_kib_are_read(tmp_path: Path) -> None:
    # 2 MiB clusters, and an end extension past 64 KiB: not read, refused.
    data = qcow2_bytes(cluster_bits=21, extensions=((FEATURE_TABLE, bytes(64 * KiB)),))
    refusal(tmp_path, data + bytes(1 << 20))
    # A backing file name where QEMU would read it, but past 64 KiB.
    at = 80 * KiB
    head = bytearray(qcow2_bytes(cluster_bits=21).ljust(at + 8, b"\0"))
    head[8:20] = struct.pack(">QI", at, 8)
    head[at:] = b"/etc/pwd"
    assert refusal(tmp_path, bytes(head)).message.endswith(
        "backing file name lies past its first 64 KiB"
    )


# Made by qemu-img, where it is installed: the layouts real files have.


def qemu_img(path: Path, *options: str) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed: the hand-built headers above stand in")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), "1M"], check=True
    )
    return path


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_qemu_img_files_read_as_qemu_img_made_them(tmp_path: Path, compat: str) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(bytes(1 << 20))
    plain = qemu_img(tmp_path / "plain.qcow2", "-o", f"compat={compat}")
    overlay = qemu_img(tmp_path / "overlay.qcow2", "-o", f"compat={compat}", "-b", str(base),
                       "-F", "raw")  # fmt: skip
    assert find_qcow2_header(plain) == Qcow2Header(None, None)
    assert find_qcow2_header(overlay) == Qcow2Header(str(base), None)


def test_a_qemu_img_file_with_a_data_file_names_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    path = qemu_img(tmp_path / "data.qcow2", "-o", f"data_file={victim}")
    assert find_qcow2_header(path) == Qcow2Header(None, str(victim))
    raw_data = qemu_img(tmp_path / "raw.qcow2", "-o", f"data_file={victim},data_file_raw=on")
    assert find_qcow2_header(raw_data) == Qcow2Header(None, str(victim))
