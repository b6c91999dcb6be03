"""What a guest is given at boot besides its login, without changing its
image: systemd credentials (--set-credential, --load-credential, as
systemd-vmspawn names them), units (--systemd-units DIR, bcvk's name), extra
disks (--mount-disk-file, bcvk's) and swap (--add-swap, bcvk's).

Units travel as credentials too (`systemd.extra-unit.NAME`, and a drop-in
`systemd.unit-dropin.TARGET~NAME` for each target of their [Install]
section): systemd 256 and later make units of them at boot, on an image
boot and on a disk boot alike, and nothing is written into the image or
the disk. Every credential travels as a file (credentials.py), so no value
is ever on a command line."""

import base64
import codecs
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bootc_box.binds import Bind
from bootc_box.boot import FORMATS, Disk
from bootc_box.credentials import smbios_credential, write_private
from bootc_box.disks import checked_format, parse_size
from bootc_box.environment import HOST_STORE, Environment
from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line_of

# The credentials bootc-box itself gives every boot (credentials.py): a
# user's would be ignored by systemd, or would undo the login.
OWN_CREDENTIALS = (
    "ssh.authorized_keys.root",
    "tmpfiles.extra",
    # serial_exec.py's, for images without sshd.
    "bootc-box.exec",
    "systemd.extra-unit.bootc-box-exec.service",
)
# systemd's CREDENTIAL_SIZE_MAX is 1 MiB; SMBIOS tables hold all of them,
# so the whole is kept well below what firmware copies.
CREDENTIAL_MAX = 1 << 20
CREDENTIALS_MAX = 4 << 20

UNIT_SUFFIXES = (
    "service", "socket", "timer", "path", "mount", "automount", "swap", "target", "slice",
)  # fmt: skip
# systemd's unit_name_is_valid(): these characters, at most 255 of them.
_UNIT_CHARS = r"[A-Za-z0-9:_.\\-]"
_UNIT_NAME = re.compile(rf"{_UNIT_CHARS}+(@{_UNIT_CHARS}*)?\.({'|'.join(UNIT_SUFFIXES)})")
# [Install] keys and the [Unit] dependency each becomes.
_INSTALL_KEYS = {"WantedBy": "Wants", "RequiredBy": "Requires", "UpheldBy": "Upholds"}
# What the guest names a disk after (virtio-blk's serial: 20 bytes).
_DISK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,20}")
SWAP_NAME = "swap"


@dataclass(frozen=True)
class Credential:
    name: str
    value: bytes = field(repr=False)  # may be a secret: never in a log line


@dataclass(frozen=True)
class Unit:
    """A unit file for the guest, and the units that want it once enabled."""

    name: str
    text: bytes
    # (dependency, target): ("Wants", "multi-user.target") from WantedBy=.
    enabled_by: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Provision:
    credentials: tuple[Credential, ...] = ()
    units: tuple[Unit, ...] = ()
    # --mount-disk-file: each with its format and the name the guest sees.
    disk_files: tuple[Disk, ...] = ()
    swap_bytes: int = 0
    # --bind-storage-ro: the host's image store, read-only at HOST_STORAGE.
    host_storage: bool = False
    # --ignition: a config for Ignition, on fw_cfg (qemu.QemuSpec.fw_cfg).
    ignition: bytes = field(default=b"", repr=False)

    def __bool__(self) -> bool:
        return bool(
            self.credentials
            or self.units
            or self.disk_files
            or self.swap_bytes
            or self.host_storage
            or self.ignition
        )

    def guest_credentials(self) -> tuple[Credential, ...]:
        """Every credential the guest gets: the user's, then the units'."""
        units = (
            *self.units,
            *((swap_unit(),) if self.swap_bytes else ()),
            *((storage_unit(),) if self.host_storage else ()),
        )
        return (*self.credentials, *unit_credentials(units))

    def digest(self) -> str:
        """What a saved state of a guest given these credentials depends on:
        a restored guest read its credentials when it booted."""
        sha = hashlib.sha256()
        for credential in (*self.guest_credentials(), Credential("ignition", self.ignition)):
            for part in (credential.name.encode(), credential.value):
                sha.update(len(part).to_bytes(8, "big") + part)
        return sha.hexdigest()[:32]


def check_credential_name(name: str, option: str) -> str:
    """A credential ID systemd takes (a file name), and not one of bootc-box's."""
    if not name or name in (".", "..") or "/" in name or len(name.encode()) > 255:
        raise BootcBoxError(
            f"invalid credential ID {name!r} in {option}",
            "an ID is a file name: no '/', at most 255 bytes, e.g. --set-credential app.key:VALUE",
        )
    if name in OWN_CREDENTIALS:
        raise BootcBoxError(
            f"{option} sets {name}, which bootc-box sets itself for its login",
            "give your key with --ssh-key, and tmpfiles lines in a unit (--systemd-units)",
        )
    return name


def _split(text: str, option: str, what: str) -> tuple[str, str]:
    name, colon, rest = text.partition(":")
    if not colon:
        raise BootcBoxError(
            f"{option} {text!r} has no {what}", f"write it as {option} ID:{what.upper()}"
        )
    return check_credential_name(name, option), rest


def parse_set_credential(text: str) -> Credential:
    """--set-credential ID:VALUE; VALUE may hold C escapes (\\n, \\x00), as
    systemd-vmspawn reads it."""
    name, value = _split(text, "--set-credential", "value")
    try:
        data = codecs.escape_decode(value.encode())[0]
    except ValueError as e:
        raise BootcBoxError(
            f"--set-credential {name}: its value has a broken escape ({e})",
            "write a backslash as \\\\",
        ) from None
    return Credential(name, _checked_size(name, data))


def parse_load_credential(text: str, cwd: Path) -> Credential:
    """--load-credential ID:PATH: the file's bytes, read now."""
    name, path = _split(text, "--load-credential", "path")
    file = cwd / path
    try:
        with file.open("rb") as f:
            data = f.read(CREDENTIAL_MAX + 1)
    except OSError as e:
        raise BootcBoxError(
            f"--load-credential {name}: cannot read {file}: {e.strerror}",
            "check the path (in the box, mount its directory with -v)",
        ) from None
    return Credential(name, _checked_size(name, data))


def _checked_size(name: str, data: bytes) -> bytes:
    if len(data) > CREDENTIAL_MAX:
        raise BootcBoxError(
            f"credential {name} is larger than {CREDENTIAL_MAX >> 20} MiB, systemd's limit",
            "pass a smaller file, or share the data with --bind",
        )
    return data


def check_credentials(credentials: tuple[Credential, ...]) -> tuple[Credential, ...]:
    names = [c.name for c in credentials]
    for name in names:
        if names.count(name) > 1:
            raise BootcBoxError(f"credential {name} is given twice", "give each ID once")
    if sum(len(c.value) for c in credentials) > CREDENTIALS_MAX:
        raise BootcBoxError(
            f"the credentials add up to more than {CREDENTIALS_MAX >> 20} MiB",
            "share large data with --bind instead",
        )
    return credentials


def parse_unit(name: str, text: bytes, where: str) -> Unit:
    """A unit file's [Install] targets, once it reads as a unit file: text
    made of [Section] headers and KEY=VALUE lines, the first a header."""
    if not _UNIT_NAME.fullmatch(name) or len(name) > 255:
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
        if section == "Install" and key.strip() in _INSTALL_KEYS:
            dependency = _INSTALL_KEYS[key.strip()]
            for target in value.split():
                if not _UNIT_NAME.fullmatch(target):
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


def swap_unit() -> Unit:
    """The swap unit for --add-swap's disk, as the guest names it."""
    what = f"/dev/disk/by-id/virtio-{SWAP_NAME}"
    name = "dev-disk-by\\x2did-virtio\\x2d" + SWAP_NAME + ".swap"
    text = f"[Unit]\nDescription=bootc-box swap (--add-swap)\n\n[Swap]\nWhat={what}\n"
    return Unit(name, text.encode(), (("Wants", "swap.target"),))


# bcvk's path for --bind-storage-ro, and how podman in the guest finds it:
# STORAGE_OPTS (containers-storage.conf(5)) for login sessions, as bcvk sets it.
HOST_STORAGE = PurePosixPath("/run/host-container-storage")
STORAGE_OPTS = f"STORAGE_OPTS=additionalimagestore={HOST_STORAGE}"


def storage_unit() -> Unit:
    """Sets STORAGE_OPTS for the guest's logins (/etc/environment, read by
    pam_env), once: a disk keeps /etc."""
    text = f"""[Unit]
Description=bootc-box: podman sees the host's images (--bind-storage-ro)
DefaultDependencies=no
After=local-fs.target
Before=systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'grep -qx {STORAGE_OPTS} /etc/environment \\
    || echo {STORAGE_OPTS} >> /etc/environment'
"""
    return Unit("bootc-box-storage.service", text.encode(), (("Wants", "sysinit.target"),))


def storage_bind(env: Environment) -> Bind:
    """--bind-storage-ro: the store of the host's images, read-only at
    HOST_STORAGE: in the box, the one shared into it; natively, podman's."""
    if env.in_box:
        if not (HOST_STORE / "overlay-images").is_dir():
            raise BootcBoxError(
                "--bind-storage-ro shares the host's image store, which is not shared into the box",
                f"add -v /var/lib/containers/storage:{HOST_STORE}:ro to the podman run line",
            )
        return Bind(HOST_STORE, HOST_STORAGE, readonly=True)
    found = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphRoot}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0 or not found.stdout.strip():
        raise BootcBoxError(
            f"--bind-storage-ro: cannot find podman's image store: {last_line_of(found.stderr)}",
            "check that podman info works",
        )
    return Bind(Path(found.stdout.strip()), HOST_STORAGE, readonly=True)


# Where CoreOS's Ignition, and bcvk, look for a config on QEMU.
IGNITION_FW_CFG = "opt/com.coreos/config"


def parse_ignition(path: Path | None, cwd: Path) -> bytes:
    """--ignition FILE: an Ignition config (JSON with ignition.version), as
    CoreOS and bcvk hand it to the guest."""
    if path is None:
        return b""
    file = cwd / path
    try:
        data = file.read_bytes()
    except OSError as e:
        raise BootcBoxError(
            f"--ignition: cannot read {file}: {e.strerror}",
            "check the path (in the box, mount its directory with -v)",
        ) from None
    try:
        config = json.loads(data)
        version = config["ignition"]["version"]
    except (ValueError, TypeError, KeyError):
        raise BootcBoxError(
            f"--ignition: {file} is not an Ignition config (JSON with ignition.version)",
            "write one by hand or with butane: butane config.bu > config.ign",
        ) from None
    if not isinstance(version, str):
        raise BootcBoxError(f"--ignition: {file}: ignition.version is not a string")
    return data


def parse_disk_file(text: str, cwd: Path) -> Disk:
    """--mount-disk-file FILE[:NAME[:FORMAT]] (bcvk's form): NAME defaults to
    the file's name without its suffix; FORMAT to qcow2 for FILE.qcow2, else
    raw: from what the user named, never from the file's bytes."""
    path_text, _, rest = text.partition(":")
    name, _, disk_format = rest.partition(":")
    path = cwd / path_text
    name = name or path.stem
    if not _DISK_NAME.fullmatch(name) or name in ("root", SWAP_NAME):
        raise BootcBoxError(
            f"--mount-disk-file {text}: invalid disk name {name!r}",
            "give FILE:NAME, NAME of 1 to 20 letters, digits, '.', '_' or '-'"
            " (not root or swap, which bootc-box uses)",
        )
    disk_format = disk_format or ("qcow2" if path.suffix == ".qcow2" else "raw")
    if disk_format not in FORMATS:
        raise BootcBoxError(
            f"--mount-disk-file {text}: unknown format {disk_format!r}",
            "give FILE:NAME:raw or FILE:NAME:qcow2",
        )
    if not path.is_file():
        raise BootcBoxError(
            f"--mount-disk-file: {path} is not a file",
            f"create it first, e.g. truncate -s 10G {path} (in the box, mount its directory)",
        )
    disk = Disk(path, disk_format, serial=name)
    checked_format(disk)  # a qcow2 that names other files is refused
    return disk


def recorded_disk(path: object, disk_format: object, serial: object) -> Disk:
    """A --mount-disk-file a kept VM recorded, checked but for the file
    itself, which `start` looks for (it may be back by then)."""
    if not (isinstance(path, str) and path.startswith("/")):
        raise ValueError("a disk file's path is not absolute")
    if disk_format not in FORMATS or not isinstance(serial, str):
        raise ValueError(f"disk file {path} has no known format or name")
    if not _DISK_NAME.fullmatch(serial) or serial in ("root", SWAP_NAME):
        raise ValueError(f"disk file {path} has an invalid name")
    return Disk(Path(path), disk_format, serial=serial)


def check_disk_files_exist(disks: tuple[Disk, ...]) -> None:
    """At boot: a kept VM's disk files, which may have moved since `run`."""
    for disk in disks:
        if not disk.path.is_file():
            raise BootcBoxError(
                f"--mount-disk-file: {disk.path} is not a file",
                "put it back, or mount its directory into the box with -v",
            )
        checked_format(disk)


def check_disk_files(disks: tuple[Disk, ...]) -> tuple[Disk, ...]:
    for i, disk in enumerate(disks):
        for other in disks[:i]:
            if disk.serial == other.serial:
                raise BootcBoxError(
                    f"--mount-disk-file names two disks {disk.serial}",
                    "give each its own NAME: FILE:NAME",
                )
            if disk.path.resolve() == other.path.resolve():
                raise BootcBoxError(
                    f"--mount-disk-file: {disk.path} is already attached", "attach a file once"
                )
    return disks


def parse_swap(text: str | None) -> int:
    return parse_size(text, "--add-swap") if text else 0


def mkswap_argv(path: Path) -> list[str]:
    return ["mkswap", "--quiet", str(path)]


def make_swap(path: Path, size: int) -> Disk:
    """A sparse swap file for the guest (--add-swap), made on the host."""
    try:
        with path.open("xb") as f:
            f.truncate(size)
        made = subprocess.run(mkswap_argv(path), capture_output=True, text=True, check=False)
    except OSError as e:
        raise BootcBoxError(
            f"cannot make swap for --add-swap in {path.parent}: {e.strerror}",
            "set TMPDIR to a directory with room, or give a smaller --add-swap",
        ) from None
    if made.returncode != 0:
        raise BootcBoxError(f"cannot make swap for --add-swap: {last_line_of(made.stderr)}")
    return Disk(path, "raw", serial=SWAP_NAME)


def write_credentials(directory: Path, credentials: tuple[Credential, ...]) -> tuple[Path, ...]:
    """The credentials as SMBIOS files in `directory`, readable by their owner only."""
    directory.mkdir(mode=0o700)
    # Numbered: an ID with its prefix may be longer than a file name may be.
    return tuple(
        write_private(directory / f"{i}.smbios", smbios_credential(c.name, c.value).encode())
        for i, c in enumerate(credentials)
    )


def parse_provision(
    *,
    set_credentials: tuple[str, ...] = (),
    load_credentials: tuple[str, ...] = (),
    units_dir: Path | None = None,
    disk_files: tuple[str, ...] = (),
    swap: str | None = None,
    host_storage: bool = False,
    ignition: Path | None = None,
    cwd: Path,
) -> Provision:
    """The provisioning options of `run`, each checked: a one-line error
    names the first that is wrong, before anything starts."""
    credentials = (
        *(parse_set_credential(text) for text in set_credentials),
        *(parse_load_credential(text, cwd) for text in load_credentials),
    )
    provision = Provision(
        credentials=check_credentials(credentials),
        units=read_units(cwd / units_dir) if units_dir else (),
        disk_files=check_disk_files(tuple(parse_disk_file(text, cwd) for text in disk_files)),
        swap_bytes=parse_swap(swap),
        host_storage=host_storage,
        ignition=parse_ignition(ignition, cwd),
    )
    # A unit's credential given as --set-credential too: systemd would keep one.
    check_credentials(provision.guest_credentials())
    return provision


def provision_json(provision: Provision) -> bytes:
    """`provision` as a kept VM keeps it (kept_vms.py): values in base64,
    disks by path and format, as `run` was given them."""
    return json.dumps({
        "credentials": [[c.name, _b64(c.value)] for c in provision.credentials],
        "units": [[u.name, _b64(u.text), [list(by) for by in u.enabled_by]]
                  for u in provision.units],
        "disk_files": [[str(d.path), d.format, d.serial] for d in provision.disk_files],
        "swap_bytes": provision.swap_bytes,
        "host_storage": provision.host_storage,
        "ignition": _b64(provision.ignition),
    }).encode()  # fmt: skip


def provision_from_json(data: bytes) -> Provision:
    """A kept VM's provisioning, checked as `run` checked the options it came
    from (whoever can write the cache can write it too): ValueError,
    TypeError, KeyError or BootcBoxError say what is wrong."""
    record = json.loads(data)
    credentials = tuple(
        Credential(check_credential_name(name, "a kept credential"), _checked_size(name, b64(v)))
        for name, v in record["credentials"]
    )
    units = []
    for name, text, enabled_by in record["units"]:
        unit = parse_unit(name, b64(text), name)
        pairs = tuple((str(d), str(t)) for d, t in enabled_by)
        if not all(d in _INSTALL_KEYS.values() and _UNIT_NAME.fullmatch(t) for d, t in pairs):
            raise ValueError(f"unit {name} is wanted by something that is no unit")
        units.append(Unit(unit.name, unit.text, pairs))
    disks = tuple(
        recorded_disk(path, disk_format, serial)
        for path, disk_format, serial in record["disk_files"]
    )
    swap, host_storage = record["swap_bytes"], record.get("host_storage", False)
    if type(swap) is not int or swap < 0:
        raise ValueError("swap_bytes is not a size")
    if type(host_storage) is not bool:
        raise ValueError("host_storage is not true or false")
    return Provision(
        check_credentials(credentials),
        tuple(units),
        check_disk_files(disks),
        swap,
        host_storage,
        b64(record.get("ignition", "")),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("a value is not base64 text")
    return base64.b64decode(text, validate=True)
