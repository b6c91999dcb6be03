"""What a guest is given at boot besides its login, without changing its
image (Provision): the user's credentials (user_credentials.py), units
(units.py), extra disks (--mount-disk-file, bcvk's), swap (--add-swap,
bcvk's), the host's image store (--bind-storage-ro, bcvk's), a cloud-init
seed (--cloud-init, cloud_init.py) and an Ignition config (--ignition);
parsed from `run`'s options, and kept for a kept VM."""

import base64
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bootc_box.binds import Bind
from bootc_box.boot import FORMATS, Disk
from bootc_box.cloud_init import (
    CloudInit,
    checked_cloud_init,
    keep_host_keys_unit,
    parse_cloud_init,
)
from bootc_box.disks import checked_format, parse_size
from bootc_box.environment import HOST_STORE, Environment
from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line_of
from bootc_box.units import INSTALL_KEYS, UNIT_NAME, Unit, parse_unit, read_units, unit_credentials
from bootc_box.user_credentials import (
    Credential,
    check_credential_name,
    check_credentials,
    checked_size,
    parse_load_credential,
    parse_set_credential,
)

# What the guest names a disk after (virtio-blk's serial: 20 bytes).
_DISK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,20}")
SWAP_NAME = "swap"


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
    # --cloud-init: a NoCloud seed, on a disk of its own.
    cloud_init: CloudInit = field(default_factory=CloudInit)

    def __bool__(self) -> bool:
        return bool(
            self.credentials
            or self.units
            or self.disk_files
            or self.swap_bytes
            or self.host_storage
            or self.ignition
            or self.cloud_init
        )

    @property
    def adds_disks(self) -> bool:
        """Whether the VM gets disks of the run's (launch.provide)."""
        return bool(self.disk_files or self.swap_bytes or self.cloud_init)

    def guest_credentials(self) -> tuple[Credential, ...]:
        """Every credential the guest gets: the user's, then the units'."""
        units = (
            *self.units,
            *((swap_unit(),) if self.swap_bytes else ()),
            *((storage_unit(),) if self.host_storage else ()),
            *((keep_host_keys_unit(),) if self.cloud_init else ()),
        )
        return (*self.credentials, *unit_credentials(units))

    def digest(self) -> str:
        """What a saved state of a guest given these credentials depends on:
        a restored guest read its credentials when it booted."""
        sha = hashlib.sha256()
        seed = tuple(Credential(f"cloud-init/{n}", v) for n, v in self.cloud_init.files)
        for credential in (
            *self.guest_credentials(),
            Credential("ignition", self.ignition),
            *seed,
        ):
            for part in (credential.name.encode(), credential.value):
                sha.update(len(part).to_bytes(8, "big") + part)
        return sha.hexdigest()[:32]


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


def parse_provision(
    *,
    set_credentials: tuple[str, ...] = (),
    load_credentials: tuple[str, ...] = (),
    units_dir: Path | None = None,
    disk_files: tuple[str, ...] = (),
    swap: str | None = None,
    host_storage: bool = False,
    ignition: Path | None = None,
    cloud_init: Path | None = None,
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
        cloud_init=parse_cloud_init(cloud_init, cwd),
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
        "cloud_init": [[name, _b64(data)] for name, data in provision.cloud_init.files],
    }).encode()  # fmt: skip


def provision_from_json(data: bytes) -> Provision:
    """A kept VM's provisioning, checked as `run` checked the options it came
    from (whoever can write the cache can write it too): ValueError,
    TypeError, KeyError or BootcBoxError say what is wrong."""
    record = json.loads(data)
    credentials = tuple(
        Credential(check_credential_name(name, "a kept credential"), checked_size(name, b64(v)))
        for name, v in record["credentials"]
    )
    units = []
    for name, text, enabled_by in record["units"]:
        unit = parse_unit(name, b64(text), name)
        pairs = tuple((str(d), str(t)) for d, t in enabled_by)
        if not all(d in INSTALL_KEYS.values() and UNIT_NAME.fullmatch(t) for d, t in pairs):
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
        _recorded_cloud_init(record.get("cloud_init", [])),
    )


def _recorded_cloud_init(files: object) -> CloudInit:
    if not isinstance(files, list):
        raise TypeError("cloud_init is not a list")
    seed = {str(name): b64(data) for name, data in files}
    if len(seed) != len(files):
        raise ValueError("a cloud-init file is recorded twice")
    return checked_cloud_init(seed, "the kept VM's seed") if seed else CloudInit()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("a value is not base64 text")
    return base64.b64decode(text, validate=True)
