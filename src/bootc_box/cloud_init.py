"""--cloud-init PATH: a NoCloud seed for the guest's cloud-init.

PATH is a user-data file, or a directory of NoCloud's files (user-data,
meta-data, network-config, vendor-data). The guest gets them on a read-only
ISO 9660 disk labelled cidata, as cloud-localds makes it: cloud-init's
ds-identify finds the seed by that label, with no network and no change to
the image. meta-data, when not given, names an instance ID made from the
seed, so a kept VM's cloud-init runs once, not at every boot."""

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.boot import Disk
from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line_of
from bootc_box.units import Unit

SEED_FILES = ("user-data", "meta-data", "network-config", "vendor-data")
SEED_LABEL = "cidata"
SEED_MAX = 4 << 20
# The first line of each kind of user-data cloud-init runs (its "user-data
# formats"); anything else it ignores without a word, so it is refused here.
USER_DATA_HEADERS = (
    "#cloud-config",
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "## template: jinja",
    "Content-Type:",
    "MIME-Version:",
)


@dataclass(frozen=True)
class CloudInit:
    """The seed's files by name, in SEED_FILES order."""

    files: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return bool(self.files)


def parse_cloud_init(path: Path | None, cwd: Path) -> CloudInit:
    """--cloud-init PATH, each file read now and checked."""
    if path is None:
        return CloudInit()
    source = cwd / path
    try:
        mode = os.lstat(source).st_mode
    except OSError as e:
        raise _unreadable(source, e) from None
    if stat.S_ISDIR(mode):
        files = {
            name: data for name in SEED_FILES if (data := _read_seed_file(source, name)) is not None
        }
        _refuse_strays(source)
        if "user-data" not in files and "meta-data" not in files:
            raise BootcBoxError(
                f"--cloud-init: {source} has neither user-data nor meta-data",
                "give a NoCloud directory with user-data (and meta-data), or a user-data file",
            )
    elif stat.S_ISREG(mode):
        files = {"user-data": _read(source)}
    else:
        raise BootcBoxError(
            f"--cloud-init: {source} is neither a file nor a directory",
            "give a user-data file or a NoCloud directory",
        )
    return checked_cloud_init(files, str(source))


def checked_cloud_init(files: dict[str, bytes], where: str) -> CloudInit:
    """The seed, checked, with meta-data made when it is missing. `where`
    names its source in errors: a kept VM's record is checked here too."""
    if set(files) - set(SEED_FILES):
        raise ValueError(f"{where}: unknown seed files {sorted(set(files) - set(SEED_FILES))}")
    if sum(len(data) for data in files.values()) > SEED_MAX:
        raise BootcBoxError(
            f"--cloud-init: {where} holds more than {SEED_MAX >> 20} MiB",
            "keep the seed small: fetch large files from the guest, or share them with --bind",
        )
    user_data = files.get("user-data", b"")
    if user_data and not user_data.startswith(tuple(h.encode() for h in USER_DATA_HEADERS)):
        raise BootcBoxError(
            f"--cloud-init: {where}: user-data is not in a format cloud-init runs",
            "start it with #cloud-config (or #! for a script)",
        )
    for name, data in files.items():
        try:
            data.decode()
        except UnicodeDecodeError:
            raise BootcBoxError(
                f"--cloud-init: {where}: {name} is not UTF-8 text",
                "write it as YAML text (gzip'd user-data is not taken)",
            ) from None
    # NoCloud takes a seed only with both files, either may be empty.
    if "meta-data" not in files:
        files = {**files, "meta-data": meta_data(files)}
    files = {"user-data": b"", **files}
    return CloudInit(tuple((name, files[name]) for name in SEED_FILES if name in files))


def meta_data(files: dict[str, bytes]) -> bytes:
    """NoCloud's meta-data, for a seed given without: an instance ID that is
    the same for the same seed (cloud-init runs once per instance ID)."""
    sha = hashlib.sha256()
    for name in sorted(files):
        sha.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "big") + files[name])
    return f"instance-id: iid-bootc-box-{sha.hexdigest()[:16]}\n".encode()


def _read_seed_file(directory: Path, name: str) -> bytes | None:
    """One of a NoCloud directory's files, or None when it is not there."""
    try:
        return _read(directory / name)
    except BootcBoxError:
        if not os.path.lexists(directory / name):
            return None
        raise


def _read(file: Path) -> bytes:
    """A regular file's bytes; a link is not followed (the seed may come
    from a workflow's checkout)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise _unreadable(file, e) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BootcBoxError(f"--cloud-init: {file} is not a regular file", "give a file")
        return f.read(SEED_MAX + 1)


def _refuse_strays(directory: Path) -> None:
    strays = sorted(set(os.listdir(directory)) - set(SEED_FILES))
    if strays:
        raise BootcBoxError(
            f"--cloud-init: {directory} has {strays[0]}, which is not a NoCloud file",
            f"keep only {', '.join(SEED_FILES)} in it",
        )


def _unreadable(file: Path, e: OSError) -> BootcBoxError:
    return BootcBoxError(
        f"--cloud-init: cannot read {file}: {e.strerror}",
        "check the path (in the box, mount its directory with -v)",
    )


def seed_argv(directory: Path, image: Path) -> list[str]:
    """xorriso making an ISO 9660 seed of `directory`'s files, as
    cloud-localds and genisoimage do it (Joliet and Rock Ridge names)."""
    return [
        "xorriso", "-as", "mkisofs", "-quiet", "-volid", SEED_LABEL,
        "-joliet", "-rock", "-output", str(image), str(directory),
    ]  # fmt: skip


def make_seed(directory: Path, cloud_init: CloudInit) -> Disk:
    """The seed disk in `directory` (new, the VM's own), read-only for the guest."""
    files = directory / "files"
    files.mkdir(mode=0o700, parents=True)
    for name, data in cloud_init.files:
        fd = os.open(files / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    image = directory / "seed.iso"
    image.touch(mode=0o600)
    made = subprocess.run(seed_argv(files, image), capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise BootcBoxError(f"cannot make the --cloud-init seed: {last_line_of(made.stderr)}")
    return Disk(image, "raw", serial=SEED_LABEL, readonly=True)


def keep_host_keys_unit() -> Unit:
    """cloud-init's own settings for a bootc-box guest, written before its
    network stage (the ssh and resize modules' stage). It would replace the
    host keys with new ones at its first boot, which ssh would then refuse:
    bootc-box gives the guest its host key and pins it (hostkeys.py). And
    on an image's root (virtiofs under an overlay) there is no partition to
    grow: trying makes `cloud-init status` say degraded."""
    config = "ssh_deletekeys: false, ssh_genkeytypes: []"
    image_root = "resize_rootfs: false, growpart: {devices: []}"
    # $$: systemd would expand $r itself.
    text = f"""[Unit]
Description=bootc-box: cloud-init keeps the host keys bootc-box gave
DefaultDependencies=no
After=local-fs.target
Before=cloud-init.service cloud-init-network.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'case $$(findmnt -no FSTYPE /) in \\
    overlay|virtiofs) r=", {image_root}";; esac; \\
    mkdir -p /etc/cloud/cloud.cfg.d \\
    && echo "{{{config}$$r}}" > /etc/cloud/cloud.cfg.d/99-bootc-box.cfg'
"""
    return Unit("bootc-box-cloud-init.service", text.encode(), (("Wants", "sysinit.target"),))
