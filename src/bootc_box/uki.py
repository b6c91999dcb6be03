"""Unified Kernel Images: the kernel, initramfs and command line an image
ships as one PE file, read section by section (as bcvk does with objcopy)
so the kernel can be booted directly like any other.

pefile rather than binutils' objcopy: it is pure Python (one more Debian
package in the box, no program to run per section), and a file that is not
a PE comes back as an exception with a reason, not as objcopy's stderr."""

import re
from dataclasses import dataclass
from pathlib import Path

import pefile

from bootc_box.cache_entries import open_regular
from bootc_box.errors import BootcBoxError

# Sections a UKI's base profile may hold; the UAPI UKI spec puts every
# profile after the first `.profile` section, and the base comes before it.
LINUX, INITRD, CMDLINE, UNAME, PROFILE = ".linux", ".initrd", ".cmdline", ".uname", ".profile"

# Kernel arguments of the UKI that name the root bootc-box replaces (the
# image over virtiofs), or the console it reads: they would point the boot
# at a disk the VM does not have, or the console away from the log.
OURS = frozenset({
    "root", "rootfstype", "rootflags", "ro", "rw", "console",
    "composefs", "ostree", "roothash", "usrhash", "mount.usr", "mount.usrfstype",
    "mount.usrflags", "systemd.verity", "systemd.volatile",
})  # fmt: skip

# Words of a kernel command line: a double-quoted part keeps its spaces.
WORD = re.compile(r'(?:[^\s"]|"[^"]*")+')
MAX_CMDLINE = 4096


@dataclass(frozen=True)
class UkiParts:
    linux: bytes
    initrd: bytes
    cmdline: str
    uname: str


def read_uki(path: Path, shown: str) -> UkiParts:
    """The base profile's sections of the UKI at `path` (`shown` names it
    in errors); one line naming what is wrong when it is not a UKI."""
    with open_regular(path) as file:
        data = file.read()
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as e:
        raise corrupt(shown, f"it is not a PE file ({e.value})") from e
    sections: dict[str, bytes] = {}
    for section in pe.sections:
        name = section.Name.rstrip(b"\0").decode("ascii", "replace")
        if name == PROFILE:
            break
        start = section.PointerToRawData
        # VirtualSize is the data's own size; the raw size is padded to the
        # file alignment. A zero VirtualSize means the raw size is all.
        size = min(section.Misc_VirtualSize or section.SizeOfRawData, section.SizeOfRawData)
        if start + size > len(data):
            raise corrupt(shown, f"its {name} section runs past the end of the file")
        sections.setdefault(name, data[start : start + size])
    if LINUX not in sections:
        raise corrupt(shown, f"it has no {LINUX} section")
    if INITRD not in sections:
        raise BootcBoxError(
            f"the UKI {shown} has no {INITRD} section: bootc-box needs an initramfs to boot it",
            "build the UKI with one (ukify build --initrd=...), or ship vmlinuz and initramfs.img",
        )
    return UkiParts(
        sections[LINUX],
        sections[INITRD],
        section_text(sections.get(CMDLINE, b""), shown, CMDLINE),
        section_text(sections.get(UNAME, b""), shown, UNAME),
    )


def section_text(data: bytes, shown: str, name: str) -> str:
    """A text section, which must be short printable ASCII: it goes on
    QEMU's command line and into logs."""
    text = data.rstrip(b"\0").decode("ascii", "replace").strip()
    if len(text) > MAX_CMDLINE or not text.isprintable():
        raise corrupt(shown, f"its {name} section is not a line of printable ASCII")
    return text


def uki_kargs(cmdline: str) -> tuple[str, ...]:
    """The UKI's kernel arguments that still apply when bootc-box boots it:
    all but those that name the root or the console (OURS)."""
    return tuple(w for w in WORD.findall(cmdline) if w.split("=", 1)[0] not in OURS)


def corrupt(shown: str, why: str) -> BootcBoxError:
    return BootcBoxError(
        f"the UKI {shown} cannot be booted: {why}",
        "rebuild the image with a valid UKI (made by ukify), or ship vmlinuz and initramfs.img",
    )
