"""Base disks under /cache/disks (see cache-layout.md): what to-disk
installed, found whole or installed once per image and options (a second
to-disk copies one instead of booting an installer), and the base of each
kept VM's overlay (clone_overlay); pruned once nothing uses them."""

import dataclasses
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootc_box.boot import FORMATS, Disk
from bootc_box.cache_entries import (
    Entries,
    cache_dir,
    file_problem,
    manifest_problem,
    read_manifest,
    write_manifest,
)
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line_of
from bootc_box.qemu import qemu_img_create, qemu_img_create_argv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskOptions:
    """Everything that decides a disk's content: the cache key's fields."""

    image_id: str
    source: str  # the reference the installed system tracks
    format: str
    size: int
    filesystem: str
    root_size: str | None
    kargs: tuple[str, ...]

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def file_name(self) -> str:
        return f"disk.{self.format}"


@dataclass(frozen=True)
class DiskManifest:
    key: str
    options: DiskOptions
    file_size: int
    created: str


def disk_entries(env: Environment) -> Entries:
    return Entries(cache_dir(env, "disks"), creating="install")


def entry_problem(entry: Path, key: str) -> str | None:
    """Why the entry cannot be used, or None when it looks whole. Its files
    are never followed through a link: a writer of the cache could point
    one at any file of the box, for a kept VM's guest to read."""
    manifest = manifest_problem(entry, DiskManifest)
    if isinstance(manifest, str):
        return manifest
    if manifest.key != key:
        return "its manifest is for other options"
    disk = entry / manifest.options.file_name
    problem = file_problem(disk)
    if problem is not None:
        return f"{disk.name} is {problem}"
    if disk.stat().st_size != manifest.file_size:
        return f"{disk.name} has {disk.stat().st_size} bytes, not {manifest.file_size}"
    return None


@contextmanager
def find_disk(env: Environment, options: DiskOptions) -> Iterator[Path | None]:
    """The cached disk of `options`, held against deletion until the block
    ends; None when there is none whole (a damaged one is deleted)."""
    damaged = "The cached disk %s is damaged (%s); installing again"
    with disk_entries(env).find(options.key, entry_problem, damaged) as entry:
        yield None if entry is None else entry / options.file_name


@contextmanager
def installing(env: Environment, options: DiskOptions) -> Iterator[Path]:
    """The one slot to install `options` into: a partial entry directory.
    Runs of the same options wait here for the run installing them, then
    find its disk. The caller writes the disk into the slot and `commit`s."""
    waiting = "Another run is installing this image with these options; waiting for its disk"
    with disk_entries(env).making(options.key, waiting, "install of this disk") as partial:
        yield partial


def commit_disk(env: Environment, options: DiskOptions, partial: Path) -> Path:
    """Put a finished disk in place; returns its file in the entry."""
    manifest = DiskManifest(
        key=options.key,
        options=options,
        file_size=(partial / options.file_name).stat().st_size,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_manifest(partial, manifest)
    return disk_entries(env).commit(partial, options.key, entry_problem) / options.file_name


def recorded_disk(env: Environment, key: str) -> Disk:
    """The cached disk `key` in the format its manifest records (a VM's
    base, opened under its overlay as that format, never as the overlay's
    header or the disk's own bytes would have it)."""
    entry = disk_entries(env).entry(key)
    problem = entry_problem(entry, key)
    if problem is None:
        options = read_manifest(entry, DiskManifest).options
        if options.format in FORMATS:
            return Disk(entry / options.file_name, options.format)
        problem = f"it is in format {options.format!r}"
    raise BootcBoxError(
        f"the base disk {key} in the cache cannot be used: {problem}",
        "remove the VMs built on it (bootc-box rm NAME) and make them again",
    )


def copy_disk(source: Path, target: Path) -> None:
    """A copy that shares blocks where the file system can (reflink), and
    keeps holes as holes where it cannot."""
    copied = subprocess.run(
        ["cp", "--reflink=auto", "--sparse=always", str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if copied.returncode != 0:
        raise BootcBoxError(f"cannot copy the cached disk: {last_line_of(copied.stderr)}")


def list_disks(env: Environment) -> list[tuple[DiskManifest, int]]:
    """Every whole entry's manifest and its disk's blocks in use."""
    return [
        (read_manifest(e, DiskManifest), used) for e, used in disk_entries(env).whole(entry_problem)
    ]


def prune_disks(env: Environment, keep: set[str] | None) -> int:
    """Remove every disk that no run is copying or installing and no VM's
    disk is built on (`keep`; None: keep all): each is a to-disk's result
    that the next to-disk can make again."""
    if keep is None:
        return 0
    return disk_entries(env).prune(lambda key: key not in keep)


def manifest_json(manifest: DiskManifest, used: int) -> dict[str, object]:
    return {**dataclasses.asdict(manifest), "disk_usage": used}


def with_base_disk(
    env: Environment,
    options: DiskOptions,
    install: Callable[[Path], None],
    use: Callable[[Path], None],
) -> bool:
    """Call `use` with the cached disk of `options`, held against deletion,
    having it `install`ed into the cache first when it is not there; True
    when it was (also when the run this one waited for installed it)."""
    if use_cached(env, options, use):
        return True
    with installing(env, options) as slot:
        if use_cached(env, options, use):
            return True
        install(slot / options.file_name)
        commit_disk(env, options, slot)
    if not use_cached(env, options, use):
        raise BootcBoxError(
            "the disk just installed was removed from the cache (by cache prune?)", "run again"
        )
    return False


def use_cached(env: Environment, options: DiskOptions, use: Callable[[Path], None]) -> bool:
    with find_disk(env, options) as cached:
        if cached is None:
            return False
        use(cached)
        return True


def clone_overlay(base: Path, options: DiskOptions, overlay: Path) -> None:
    """A new qcow2 overlay at `overlay` on the cached disk `base` of
    `options`, which names it in the format the cache recorded."""
    qemu_img_create(qemu_img_create_argv(overlay, "qcow2", backing=Disk(base, options.format)))
