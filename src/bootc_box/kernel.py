"""Find the kernel and initramfs a bootc image ships in /usr/lib/modules/<kver>/."""

from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError

MODULES_DIR = Path("usr/lib/modules")


@dataclass(frozen=True)
class BootFiles:
    kver: str
    kernel: Path
    initramfs: Path


def resolve_in_root(root: Path, path: Path) -> Path:
    """Follow symlinks in `path` as the image would see them: an absolute link
    points into the image, and `..` stops at the image's root, never the host's."""
    current = root
    pending = list(path.relative_to(root).parts)
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        current = current / part
        if current.is_symlink():
            links += 1
            if links > 40:
                raise BootcBoxError(f"too many levels of symbolic links in {path}")
            target = current.readlink()
            current = root if target.is_absolute() else current.parent
            pending = [p for p in target.parts if p != "/"] + pending
    return current


def kernel_versions(root: Path) -> list[str]:
    """The kernels the image at `root` ships: /usr/lib/modules/<kver>/vmlinuz."""
    modules = root / MODULES_DIR
    return sorted(
        d.name
        for d in (modules.iterdir() if modules.is_dir() else ())
        if resolve_in_root(root, d / "vmlinuz").is_file()
    )


def boot_files(root: Path, image: str) -> BootFiles:
    """The one kernel in the image, or an error that says what was found."""
    modules = root / MODULES_DIR
    kernels = kernel_versions(root)
    if not kernels:
        raise BootcBoxError(
            f"{image} has no kernel: found no /{MODULES_DIR}/<kver>/vmlinuz",
            "boot a bootc image (one built with a kernel and initramfs in /usr/lib/modules)",
        )
    if len(kernels) > 1:
        raise BootcBoxError(
            f"{image} has {len(kernels)} kernels in /{MODULES_DIR} ({', '.join(kernels)})",
            "a bootc image must ship exactly one; remove the others from the image",
        )
    kver = kernels[0]
    initramfs = resolve_in_root(root, modules / kver / "initramfs.img")
    if not initramfs.is_file():
        raise BootcBoxError(
            f"{image} has a kernel but no /{MODULES_DIR}/{kver}/initramfs.img",
            "generate it in the image build (e.g. with dracut) next to vmlinuz",
        )
    return BootFiles(kver, resolve_in_root(root, modules / kver / "vmlinuz"), initramfs)
