"""Reading Unified Kernel Images: which sections, which kernel arguments
survive, what a broken one says; and finding UKIs in an image tree."""

from pathlib import Path

import pytest

from bootc_box.boot_cache import find_cached_kernel
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kernel import Kernel, Uki, Vmlinuz, boot_files, image_kernels
from bootc_box.uki import read_uki, uki_kargs
from tests.unit.pe import make_pe
from tests.unit.test_boot_cache import IMAGE_ID, cached_boot_files
from tests.unit.test_kernel import add_kernel

CMDLINE = b'root=LABEL=wrong rw console=tty0 quiet rd.marker="a b" systemd.unit=x.target\0'


def uki_bytes(*, initrd: bool = True, profile: bool = False) -> bytes:
    sections = [(".osrel", b"ID=debian\n"), (".cmdline", CMDLINE), (".uname", b"6.12.0-uki\n")]
    sections += [(".linux", b"the kernel"), *([(".initrd", b"the initramfs")] * initrd)]
    if profile:
        sections += [(".profile", b"ID=other"), (".linux", b"another kernel")]
    return make_pe(sections)


def add_uki(root: Path, where: str, data: bytes | None = None) -> Path:
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(uki_bytes() if data is None else data)
    return path


def test_the_base_profile_sections_are_read(tmp_path: Path) -> None:
    path = add_uki(tmp_path, "x.efi", uki_bytes(profile=True))
    parts = read_uki(path, "/x.efi")
    assert (parts.linux, parts.initrd) == (b"the kernel", b"the initramfs")
    assert parts.cmdline == CMDLINE.rstrip(b"\0").decode()
    assert parts.uname == "6.12.0-uki"


def test_the_root_and_console_of_the_uki_are_ours_to_set() -> None:
    kargs = uki_kargs(CMDLINE.rstrip(b"\0").decode())
    assert kargs == ("quiet", 'rd.marker="a b"', "systemd.unit=x.target")


def test_a_uki_without_an_initrd_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = add_uki(tmp_path, "x.efi", uki_bytes(initrd=False))
    with pytest.raises(BootcBoxError, match=r"UKI /x\.efi has no \.initrd section") as err:
        read_uki(path, "/x.efi")
    assert "--initrd" in str(err.value.hint)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"MZ not really a PE file", "not a PE file"),
        (make_pe([(".initrd", b"i")]), r"no \.linux section"),
        (make_pe([(".linux", b"k" * 4096), (".initrd", b"i")])[:-4096], "runs past the end"),
        (make_pe([(".linux", b"k"), (".initrd", b"i"), (".cmdline", b"a\x1b[2Jb")]), "printable"),
    ],
)
def test_a_corrupt_uki_says_what_is_wrong(tmp_path: Path, data: bytes, why: str) -> None:
    path = add_uki(tmp_path, "x.efi", data)
    with pytest.raises(BootcBoxError, match=rf"the UKI /x\.efi cannot be booted: .*{why}"):
        read_uki(path, "/x.efi")


def test_a_uki_in_the_modules_directory_comes_before_a_vmlinuz(tmp_path: Path) -> None:
    moddir = add_kernel(tmp_path, "6.12.0")
    add_uki(tmp_path, "usr/lib/modules/6.12.0/6.12.0.efi")
    found = boot_files(tmp_path, "img")
    assert found == Uki("6.12.0", moddir / "6.12.0.efi", "/usr/lib/modules/6.12.0/6.12.0.efi")
    assert image_kernels(tmp_path) == [Kernel("6.12.0", uki=True)]
    assert str(image_kernels(tmp_path)[0]) == "6.12.0 (UKI)"


def test_a_uki_in_the_esp_is_found_by_its_name(tmp_path: Path) -> None:
    add_uki(tmp_path, "boot/EFI/Linux/debian-6.12.0.efi")
    found = boot_files(tmp_path, "img")
    assert isinstance(found, Uki)
    assert found.kver == "debian-6.12.0"


def test_two_ukis_are_refused_and_listed(tmp_path: Path) -> None:
    add_uki(tmp_path, "boot/EFI/Linux/a.efi")
    add_uki(tmp_path, "usr/lib/modules/6.12.0/6.12.0.efi")
    with pytest.raises(
        BootcBoxError,
        match=r"img has 2 UKIs \(/boot/EFI/Linux/a\.efi, /usr/lib/modules/6\.12\.0/6\.12\.0\.efi\)",
    ):
        boot_files(tmp_path, "img")


def test_a_uki_link_out_of_the_image_is_followed_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    add_uki(root, "usr/lib/uki/real.efi")
    (root / "boot/EFI/Linux").mkdir(parents=True)
    (root / "boot/EFI/Linux/x.efi").symlink_to("/usr/lib/uki/real.efi")
    outside = add_uki(tmp_path, "usr/lib/modules/9.9/9.9.efi")  # on the "host"
    (root / "usr/lib/modules").mkdir(parents=True)
    (root / "usr/lib/modules/9.9").symlink_to(outside.parent)  # absolute: the image's /
    found = boot_files(root, "img")
    assert found == Uki("x", root / "usr/lib/uki/real.efi", "/boot/EFI/Linux/x.efi")


def test_a_vmlinuz_image_is_still_a_vmlinuz(tmp_path: Path) -> None:
    add_kernel(tmp_path, "6.12.0")
    assert isinstance(boot_files(tmp_path, "img"), Vmlinuz)
    assert image_kernels(tmp_path) == [Kernel("6.12.0")]


def test_the_cache_keeps_the_cut_out_files_and_the_ukis_kargs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    env = Environment(in_box=False)
    add_uki(tmp_path / "root", "usr/lib/modules/6.12.0/6.12.0.efi")
    with cached_boot_files(env, IMAGE_ID, tmp_path / "root", "img") as files:
        assert files.kernel.read_bytes() == b"the kernel"
        assert files.initramfs.read_bytes() == b"the initramfs"
        assert files.uki
        assert files.kargs == ("quiet", 'rd.marker="a b"', "systemd.unit=x.target")
    assert find_cached_kernel(env, IMAGE_ID) == Kernel("6.12.0", uki=True)
