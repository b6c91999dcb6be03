"""`bootc-box to-disk`: install an image to a disk image with the image's own
bootc, as bootc's install contract wants: the image boots as an ephemeral
installer VM, the output file is attached to it as a disk, the store that
holds the image is shared into it, and there the image runs as a privileged
container doing `bootc install to-disk`."""

import dataclasses
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bootc_box.base_disks import DiskOptions, copy_disk, with_base_disk
from bootc_box.binds import Bind
from bootc_box.boot import Disk
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import (
    ImageRef,
    PullOptions,
    check_archive,
    mount_image,
    parse_image_ref,
    podman,
    resolve_image,
)
from bootc_box.install_stores import image_only_store
from bootc_box.kernel import resolve_in_root
from bootc_box.launch import run_vm
from bootc_box.machine_options import MachineOptions
from bootc_box.qemu import qemu_img_create, qemu_img_create_argv, require_qemu
from bootc_box.run_spec import ImageSource, RunSpec, WarmStarts
from bootc_box.userns import enter_podman_userns
from bootc_box.virtiofsd import require_virtiofsd

log = logging.getLogger(__name__)

GiB = 1024**3
MIN_DISK_SIZE = 10 * GiB
FILESYSTEMS = ("ext4", "xfs", "btrfs")
# The guest finds the output disk by this serial: /dev/disk/by-id/virtio-output.
OUTPUT_SERIAL = "output"
GUEST_STORES = PurePosixPath("/run/bootc-box/stores")
IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")

# Run in the installer VM over SSH: the shared stores become additional
# image stores of a podman whose own store is in memory, and the image runs
# as bootc's install docs say, with the guest's /dev and the stores.
# Arguments: IMAGE, then bootc install to-disk's arguments.
GUEST_INSTALL = r"""
set -eu
image=$1
shift
command -v podman >/dev/null || { echo "bootc-box: the image has no podman" >&2; exit 3; }
base=/run/bootc-box
stores=""
for store in "$base"/stores/*; do stores="$stores${stores:+, }\"$store\""; done
mkdir -p "$base/graph" "$base/runroot"
cat > "$base/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$base/graph"
runroot = "$base/runroot"
[storage.options]
additionalimagestores = [$stores]
CONF
export CONTAINERS_STORAGE_CONF="$base/storage.conf"
exec podman run --rm --pull=never --privileged --pid=host --network=none \
    --security-opt label=type:unconfined_t \
    -v /dev:/dev -v "$base:$base" -v "$base/storage.conf:/etc/containers/storage.conf:ro" \
    "$image" bootc install to-disk "$@"
"""


@dataclass(frozen=True)
class InstallSpec:
    """What to install and how: the disk bootc makes of `image`, and the
    machine of the installer VM (`machine.kargs` are the installer's; `kargs`
    go to the installed system's boot entry)."""

    image: str
    format: str = "raw"
    disk_size: int | None = None  # bytes; default: the larger of 2x the image and 10 GiB
    filesystem: str = "ext4"
    root_size: str | None = None
    kargs: tuple[str, ...] = ()
    pull: PullOptions = field(default_factory=PullOptions)
    machine: MachineOptions = field(default_factory=MachineOptions)


@dataclass(frozen=True)
class ToDiskSpec:
    install: InstallSpec
    output: Path
    force: bool = False


def check_output(output: Path, *, force: bool) -> None:
    """OUTPUT can be written whole: its directory is there and writable,
    and it is not there (or --force)."""
    directory = output.parent
    if not directory.is_dir():
        raise BootcBoxError(
            f"cannot write {output}: {directory} is not a directory",
            "create it, or mount a host directory there (-v DIR:DIR)",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BootcBoxError(
            f"cannot write {output}: {directory} is not writable", "pick a writable directory"
        )
    if output.is_dir():
        raise BootcBoxError(f"{output} is a directory", "name the disk image file to write")
    if output.exists() and not force:
        raise BootcBoxError(f"{output} already exists", "remove it, or pass --force to replace it")


def default_disk_size(image_size: int) -> int:
    return max(2 * image_size, MIN_DISK_SIZE)


def store_binds(store: Path) -> tuple[Bind, ...]:
    return (Bind(store, GUEST_STORES / "0", readonly=True),)


def install_argv(spec: InstallSpec, image_id: str, source: str) -> tuple[str, ...]:
    """The command the installer VM runs: GUEST_INSTALL with bootc's arguments.
    The image is installed by its ID, the only image in the store shared
    into the VM; `source` is what the installed system updates from."""
    bootc = [
        "--generic-image",
        # The image comes from the shared store; there is no registry to ask.
        "--skip-fetch-check",
        "--source-imgref", f"containers-storage:{image_id}",
        "--filesystem", spec.filesystem,
    ]  # fmt: skip
    if not IMAGE_ID.fullmatch(source):
        # What the installed system updates from (bootc upgrade): the
        # registry the name points at, not this VM's store.
        bootc += ["--target-imgref", source]
    if spec.root_size:
        bootc += ["--root-size", spec.root_size]
    for karg in spec.kargs:
        bootc += ["--karg", karg]
    device = f"/dev/disk/by-id/virtio-{OUTPUT_SERIAL}"
    return ("sh", "-c", GUEST_INSTALL, "sh", image_id, *bootc, device)


def check_installable(root: Path, image: str) -> None:
    """bootc installs itself: the image needs its bootc, and podman to run it."""
    for program in ("usr/bin/bootc", "usr/bin/podman"):
        if not resolve_in_root(root, root / program).is_file():
            raise BootcBoxError(
                f"{image} has no /{program}: to-disk installs an image with its own bootc",
                "build the image on a bootc base image (one that ships bootc and podman)",
            )


@contextmanager
def partial_output(output: Path) -> Iterator[Path]:
    """A path beside OUTPUT to write the disk to and then rename into place;
    whatever is there when the block ends (it was not renamed) is removed."""
    partial = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def create_disk(path: Path, disk_format: str, size: int) -> None:
    """A new empty disk image: a sparse raw file, or a qcow2 file (the
    installer then writes qcow2 directly, with no conversion after)."""
    if disk_format == "raw":
        with path.open("xb") as f:
            f.truncate(size)
        return
    qemu_img_create(qemu_img_create_argv(path, "qcow2", size))


def image_size(image_id: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image_id).stdout.strip())


def source_name(ref: ImageRef, image_id: str) -> str:
    """How the installer names the image in the shared store: by name, so
    that the installed system knows where it came from; an archive's image
    by its ID."""
    return image_id if ref.transport else ref.name


def run_to_disk(spec: ToDiskSpec) -> int:
    """Check what can be checked before anything is allocated; then copy the
    cached disk of this image and these options, or install one (caching it)."""
    output = Path.cwd() / spec.output
    check_output(output, force=spec.force)
    env = probe_environment()
    prepare_host(env, spec.install)
    began = time.monotonic()
    options = disk_options(spec.install, env)
    with partial_output(output) as partial:
        if env.cache_kept:
            cached = with_base_disk(
                env,
                options,
                lambda target: install(spec.install, options, target, env),
                lambda disk: copy_disk(disk, partial),
            )
        else:
            install(spec.install, options, partial, env)
            cached = False
        partial.rename(output)
    how = "copied from the cache" if cached else "installed"
    log.info("Wrote %s (%s) in %.0f s", output, how, time.monotonic() - began)
    return 0


def prepare_host(env: Environment, spec: InstallSpec) -> None:
    """The checks that need no image, then podman's namespace."""
    check_archive(parse_image_ref(spec.image), env)
    require_qemu()
    require_virtiofsd()
    enter_podman_userns(env)


def disk_options(spec: InstallSpec, env: Environment) -> DiskOptions:
    """The image found (pulled, loaded) and checked, and what its disk is made of."""
    ref = parse_image_ref(spec.image)
    image_id = resolve_image(ref, env, spec.pull)
    with mount_image(image_id, env) as root:
        check_installable(root, spec.image)
    size = image_size(image_id)
    if spec.disk_size is not None and spec.disk_size < size:
        raise BootcBoxError(
            f"--disk-size {spec.disk_size / 2**20:.0f}M is smaller than the image "
            f"({size / 2**20:.0f}M)",
            f"give at least twice the image, e.g. --disk-size {default_disk_size(size) >> 30}G",
        )
    return DiskOptions(
        image_id=image_id,
        source=source_name(ref, image_id),
        format=spec.format,
        size=spec.disk_size or default_disk_size(size),
        filesystem=spec.filesystem,
        root_size=spec.root_size,
        kargs=spec.kargs,
    )


def install(spec: InstallSpec, options: DiskOptions, target: Path, env: Environment) -> None:
    """Boot the image as the installer VM with `target` as its output disk."""
    create_disk(target, options.format, options.size)
    with image_only_store(env, options.image_id) as store:
        installer = RunSpec(
            ImageSource(options.image_id),
            command=install_argv(spec, options.image_id, options.source),
            machine=dataclasses.replace(spec.machine, kargs=()),
            binds=store_binds(store),
            disks=(Disk(target, options.format, serial=OUTPUT_SERIAL),),
            warm=WarmStarts.NEVER,
            label=f"the installer of {spec.image}",
        )
        log.info(
            "Installing %s (%s, %.1f GiB) with its own bootc",
            spec.image, options.format, options.size / GiB,
        )  # fmt: skip
        status = run_vm(installer, installer=True)
    if status != 0:
        raise BootcBoxError(
            f"bootc install to-disk failed in the installer VM (status {status})",
            "see its output above",
        )
