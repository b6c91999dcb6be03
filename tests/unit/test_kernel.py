from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.kernel import Vmlinuz, boot_files, resolve_in_root


def add_kernel(root: Path, kver: str, *, initramfs: bool = True) -> Path:
    moddir = root / "usr/lib/modules" / kver
    moddir.mkdir(parents=True)
    (moddir / "vmlinuz").write_bytes(b"kernel " + kver.encode())
    if initramfs:
        (moddir / "initramfs.img").write_bytes(b"initramfs")
    return moddir


def test_one_kernel_is_found_with_its_initramfs(tmp_path: Path) -> None:
    moddir = add_kernel(tmp_path, "6.12.0-1-amd64")
    found = boot_files(tmp_path, "img")
    assert isinstance(found, Vmlinuz)
    assert found.kver == "6.12.0-1-amd64"
    assert found.kernel == moddir / "vmlinuz"
    assert found.initramfs == moddir / "initramfs.img"


def test_module_directories_without_a_kernel_are_ignored(tmp_path: Path) -> None:
    add_kernel(tmp_path, "6.12.0-1-amd64")
    (tmp_path / "usr/lib/modules/extra-modules").mkdir()
    assert boot_files(tmp_path, "img").kver == "6.12.0-1-amd64"


def test_no_kernel_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match=r"img has no kernel.*/usr/lib/modules/<kver>/vmlinuz"):
        boot_files(tmp_path, "img")


def test_two_kernels_are_listed(tmp_path: Path) -> None:
    add_kernel(tmp_path, "6.1.0")
    add_kernel(tmp_path, "6.12.0")
    with pytest.raises(BootcBoxError, match=r"img has 2 kernels .*\(6\.1\.0, 6\.12\.0\)") as err:
        boot_files(tmp_path, "img")
    assert err.value.hint is not None
    assert "exactly one" in err.value.hint


def test_missing_initramfs_is_named(tmp_path: Path) -> None:
    add_kernel(tmp_path, "6.12.0", initramfs=False)
    with pytest.raises(BootcBoxError, match=r"no /usr/lib/modules/6\.12\.0/initramfs\.img"):
        boot_files(tmp_path, "img")


def test_absolute_symlink_resolves_inside_the_image(tmp_path: Path) -> None:
    moddir = add_kernel(tmp_path, "6.12.0", initramfs=False)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/initramfs-6.12.0.img").write_bytes(b"initramfs")
    (moddir / "initramfs.img").symlink_to("/boot/initramfs-6.12.0.img")
    found = boot_files(tmp_path, "img")
    assert isinstance(found, Vmlinuz)
    assert found.initramfs == tmp_path / "boot/initramfs-6.12.0.img"


def test_dotdot_cannot_climb_out_of_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").write_text("host file")
    (root / "link").symlink_to("../../outside")
    assert resolve_in_root(root, root / "link") == root / "outside"


def test_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(BootcBoxError, match="too many levels"):
        resolve_in_root(tmp_path, tmp_path / "a")
