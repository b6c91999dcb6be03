"""Units for the guest (--systemd-units DIR, bcvk's name), as systemd
credentials: each `systemd.extra-unit.NAME`, and a drop-in
`systemd.unit-dropin.TARGET~bootc-box` for each target of their [Install]
section. systemd 256 and later make units of them at boot, on an image
boot and on a disk boot alike; nothing is written into the image or disk."""

import re
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.user_credentials import Credential

UNIT_SUFFIXES = (
    "service", "socket", "timer", "path", "mount", "automount", "swap", "target", "slice",
)  # fmt: skip
# systemd's unit_name_is_valid(): these characters, at most 255 of them.
UNIT_CHARS = r"[A-Za-z0-9:_.\\-]"
UNIT_NAME = re.compile(rf"{UNIT_CHARS}+(@{UNIT_CHARS}*)?\.({'|'.join(UNIT_SUFFIXES)})")
# [Install] keys and the [Unit] dependency each becomes.
INSTALL_KEYS = {"WantedBy": "Wants", "RequiredBy": "Requires", "UpheldBy": "Upholds"}


@dataclass(frozen=True)
class Unit:
    """A unit file for the guest, and the units that want it once enabled."""

    name: str
    text: bytes
    # (dependency, target): ("Wants", "multi-user.target") from WantedBy=.
    enabled_by: tuple[tuple[str, str], ...] = ()


def parse_unit(name: str, text: bytes, where: str) -> Unit:
    """A unit file's [Install] targets, once it reads as a unit file: text
    made of [Section] headers and KEY=VALUE lines, the first a header."""
    if not UNIT_NAME.fullmatch(name) or len(name) > 255:
        raise BootcBoxError(
            f"{where} is not named as a unit ({name!r})",
            "name unit files NAME.service, NAME.timer, NAME.mount ... and keep nothing else there",
        )
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BootcBoxError(f"{where} is not a unit file: it is not UTF-8 text") from None
    section, continued, enabled_by = "", False, []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        was_continued, continued = continued, line.endswith("\\")
        if was_continued or not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        if not equals or not section or not key.strip():
            raise BootcBoxError(
                f"{where} is not a unit file: line {number} is neither [Section] nor KEY=VALUE",
                "check the file, e.g. with systemd-analyze verify",
            )
        if section == "Install" and key.strip() in INSTALL_KEYS:
            dependency = INSTALL_KEYS[key.strip()]
            for target in value.split():
                if not UNIT_NAME.fullmatch(target):
                    raise BootcBoxError(
                        f"{where}: line {number} names {target!r}, which is not a unit",
                        "name a unit there, e.g. WantedBy=multi-user.target",
                    )
                enabled_by.append((dependency, target))
    if not section:
        raise BootcBoxError(f"{where} is not a unit file: it has no [Section]")
    # A template is enabled by its instances, which the unit file cannot name.
    if "@." in name:
        enabled_by = []
    return Unit(name, text, tuple(enabled_by))


def read_units(directory: Path) -> tuple[Unit, ...]:
    """--systemd-units DIR: the unit files in DIR, or in DIR/system (bcvk's
    layout, where DIR/system/*.target.wants/ links enable units too)."""
    if not directory.is_dir():
        raise BootcBoxError(
            f"--systemd-units {directory}: no such directory",
            "give a directory of unit files (in the box, mount it with -v)",
        )
    if (directory / "system").is_dir():
        directory = directory / "system"
    units, wants = [], []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and entry.name.endswith((".wants", ".requires")):
            target, _, kind = entry.name.rpartition(".")
            dependency = "Wants" if kind == "wants" else "Requires"
            wants += [(child.name, (dependency, target)) for child in sorted(entry.iterdir())]
            continue
        if not entry.is_file():
            raise BootcBoxError(
                f"--systemd-units: {entry} is not a file",
                "keep unit files there, and TARGET.wants/ directories",
            )
        units.append(parse_unit(entry.name, entry.read_bytes(), str(entry)))
    names = {unit.name for unit in units}
    for name, by in wants:
        if name not in names:
            raise BootcBoxError(
                f"--systemd-units: {directory}/{by[1]}.{by[0].lower()}/{name} names no unit there",
                f"put {name} in {directory}, or remove the link",
            )
    return tuple(
        Unit(u.name, u.text, (*u.enabled_by, *(by for n, by in wants if n == u.name)))
        for u in units
    )


def unit_credentials(units: tuple[Unit, ...]) -> tuple[Credential, ...]:
    """Each unit as `systemd.extra-unit.NAME`, and one drop-in per target
    that wants some of them, as `systemctl enable` would link them."""
    credentials = [Credential(f"systemd.extra-unit.{u.name}", u.text) for u in units]
    targets: dict[str, list[str]] = {}
    for unit in units:
        for dependency, target in unit.enabled_by:
            targets.setdefault(target, []).append(f"{dependency}={unit.name}\n")
    for target, lines in targets.items():
        text = "[Unit]\n" + "".join(dict.fromkeys(lines))
        credentials.append(Credential(f"systemd.unit-dropin.{target}~bootc-box", text.encode()))
    return tuple(credentials)
