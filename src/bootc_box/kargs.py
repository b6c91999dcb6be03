"""Kernel arguments an image asks for in /usr/lib/bootc/kargs.d/*.toml,
bootc's format: each file holds `kargs = [...]` and, optionally,
`match-architectures = [...]` (Rust's names: x86_64, aarch64); files apply
in the order of their names, those for another architecture not at all.
bootc puts them on the command line of every boot of an installed system;
bootc-box does the same for every boot it makes."""

import tomllib
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.kernel import resolve_in_root

KARGS_DIR = Path("usr/lib/bootc/kargs.d")
# The guest's architecture: bootc-box boots qemu-system-x86_64.
GUEST_ARCH = "x86_64"


def parse_kargs_file(text: str, arch: str) -> tuple[str, ...]:
    """One kargs.d file's arguments for `arch`; ValueError says what is wrong,
    as bootc would refuse it (unknown keys included)."""
    config = tomllib.loads(text)
    unknown = set(config) - {"kargs", "match-architectures"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    kargs = config.get("kargs")
    if not isinstance(kargs, list) or not all(isinstance(k, str) for k in kargs):
        raise ValueError("kargs must be a list of strings")
    arches = config.get("match-architectures")
    if arches is not None:
        if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
            raise ValueError("match-architectures must be a list of strings")
        if arch not in arches:
            return ()
    return tuple(kargs)


def image_kargs(root: Path, image: str, arch: str = GUEST_ARCH) -> tuple[str, ...]:
    directory = resolve_in_root(root, root / KARGS_DIR)
    if not directory.is_dir():
        return ()
    kargs: list[str] = []
    for name in sorted(p.name for p in directory.iterdir() if p.name.endswith(".toml")):
        path = resolve_in_root(root, directory / name)
        try:
            kargs += parse_kargs_file(path.read_text(), arch)
        except (ValueError, UnicodeDecodeError, OSError) as e:
            raise BootcBoxError(
                f"{image} has a bad /{KARGS_DIR}/{name} ({e})",
                "fix it in the image: bootc would refuse it too",
            ) from e
    return tuple(kargs)
