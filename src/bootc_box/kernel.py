"""Find the kernel a bootc image ships: a vmlinuz and initramfs.img in
/usr/lib/modules/<kver>/, or one Unified Kernel Image (UKI)."""

from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError

MODULES_DIR = Path("usr/lib/modules")
ESP_LINUX = Path("boot/EFI/Linux")
KERNEL = "vmlinuz"


@dataclass(frozen=True)
class BootFiles:
    """What a direct kernel boot needs, as the boot cache holds it."""

    kver: str
    kernel: Path
    initramfs: Path
    # Kernel arguments the image's UKI carries (uki.uki_kargs), if it is one.
    kargs: tuple[str, ...] = ()
    uki: bool = False


@dataclass(frozen=True)
class Vmlinuz:
    kver: str
    kernel: Path
    initramfs: Path


@dataclass(frozen=True)
class Uki:
    kver: str
    path: Path
    # Where the image has it, for messages.
    shown: str


@dataclass(frozen=True)
class Kernel:
    """A kernel as `images` lists it."""

    kver: str
    uki: bool = False

    def __str__(self) -> str:
        return f"{self.kver} (UKI)" if self.uki else self.kver


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


def find_ukis(root: Path) -> list[Uki]:
    """The UKIs the image at `root` ships, where bcvk looks for them:
    /boot/EFI/Linux/*.efi and /usr/lib/modules/<kver>/*.efi."""
    # Where to look, and the kernel version a UKI there has (None: its name).
    places = [(ESP_LINUX, None), *((MODULES_DIR / k, k) for k in module_dirs(root))]
    found: list[Uki] = []
    for place, kver in places:
        directory = resolve_in_root(root, root / place)
        for path in sorted(directory.glob("*.efi")) if directory.is_dir() else ():
            file = resolve_in_root(root, path)
            if file.is_file():
                found.append(Uki(kver or path.stem, file, f"/{place}/{path.name}"))
    return found


def module_dirs(root: Path) -> list[str]:
    modules = resolve_in_root(root, root / MODULES_DIR)
    return sorted(d.name for d in (modules.iterdir() if modules.is_dir() else ()))


def kernel_versions(root: Path) -> list[str]:
    """The kernels the image at `root` ships: /usr/lib/modules/<kver>/vmlinuz."""
    modules = root / MODULES_DIR
    return [k for k in module_dirs(root) if resolve_in_root(root, modules / k / KERNEL).is_file()]


def image_kernels(root: Path) -> list[Kernel]:
    """The kernels bootc-box would choose among (as `images` lists them):
    the UKIs when there are any, else the vmlinuz kernels (bcvk's order)."""
    ukis = find_ukis(root)
    if ukis:
        return [Kernel(u.kver, uki=True) for u in ukis]
    return [Kernel(kver) for kver in kernel_versions(root)]


def boot_files(root: Path, image: str) -> Vmlinuz | Uki:
    """The one kernel in the image, or an error that says what was found.
    A UKI comes first (as in bcvk: an image may keep an old vmlinuz beside
    the UKI it boots from)."""
    modules = root / MODULES_DIR
    ukis = find_ukis(root)
    if len(ukis) > 1:
        raise BootcBoxError(
            f"{image} has {len(ukis)} UKIs ({', '.join(u.shown for u in ukis)})",
            "a bootc image must ship exactly one; remove the others from the image",
        )
    if ukis:
        return ukis[0]
    kernels = kernel_versions(root)
    if not kernels:
        raise BootcBoxError(
            f"{image} has no kernel: found no /{MODULES_DIR}/<kver>/vmlinuz"
            f" and no UKI (/{MODULES_DIR}/<kver>/*.efi, /{ESP_LINUX}/*.efi)",
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
    return Vmlinuz(kver, resolve_in_root(root, modules / kver / "vmlinuz"), initramfs)
