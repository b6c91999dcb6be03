"""What bootc-box keeps between runs (see cache-layout.md): listing and
pruning it."""

import json
import logging
from dataclasses import asdict, dataclass, field

from bootc_box.base_disks import DiskManifest, list_disks, manifest_json, prune_disks
from bootc_box.boot_cache import prune_boot_cache
from bootc_box.environment import Environment
from bootc_box.images import MOUNT_LABEL, mount_locks_dir, podman
from bootc_box.install_stores import prune_install_stores
from bootc_box.kept_vms import prune_half_made, used_disk_keys
from bootc_box.kvm_verdicts import host_boot_id, prune_verdicts
from bootc_box.locks import mount_is_live, remove_stale_locks
from bootc_box.qemu import Accel, find_qemu
from bootc_box.snapshots import (
    Manifest,
    list_snapshots,
    program_versions,
    prune_seen,
    prune_snapshots,
)
from bootc_box.table import format_table
from bootc_box.virtiofsd import find_virtiofsd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedImage:
    names: tuple[str, ...]
    image_id: str
    size: int
    store: str  # "cache" (ours) or "host" (the shared read-only store)
    created: int = 0  # seconds since the epoch
    labels: dict[str, str] = field(default_factory=dict, compare=False)


def list_images() -> list[CachedImage]:
    entries = json.loads(podman("images", "--format", "json").stdout or "[]")
    return [
        CachedImage(
            tuple(e.get("Names") or ["<none>"]),
            e["Id"],
            int(e.get("Size", 0)),
            "host" if e.get("ReadOnly") else "cache",
            int(e.get("Created", 0)),
            dict(e.get("Labels") or {}),
        )
        for e in entries
    ]


def render_images(images: list[CachedImage]) -> str:
    rows = [("STORE", "IMAGE ID", "SIZE", "NAMES")]
    rows += [(i.store, i.image_id[:12], f"{i.size / 1e6:.0f} MB", ", ".join(i.names))
             for i in images]  # fmt: skip
    return format_table(rows)


def render_snapshots(snapshots: list[tuple[Manifest, int]]) -> str:
    rows = [("SNAPSHOT", "IMAGE ID", "MEMORY", "CPUS", "ON DISK", "CREATED", "IMAGE")]
    rows += [
        (m.key[:12], m.image_id[:12], f"{m.memory_mib} MiB", str(m.cpus),
         f"{disk / 1e6:.0f} MB", m.created, m.image)
        for m, disk in snapshots
    ]  # fmt: skip
    return format_table(rows)


def render_disks(disks: list[tuple[DiskManifest, int]]) -> str:
    rows = [("DISK", "IMAGE ID", "FORMAT", "SIZE", "FILESYSTEM", "ROOT", "KARGS", "ON DISK",
             "CREATED", "IMAGE")]  # fmt: skip
    rows += [
        (m.key[:12], m.options.image_id[:12], m.options.format,
         f"{m.options.size / 2**30:.1f} GiB", m.options.filesystem, m.options.root_size or "-",
         " ".join(m.options.kargs) or "-", f"{used / 1e6:.0f} MB", m.created, m.options.source)
        for m, used in disks
    ]  # fmt: skip
    return format_table(rows)


def run_cache_ls(env: Environment, as_json: bool) -> int:
    images, snapshots, disks = list_images(), list_snapshots(env), list_disks(env)
    if as_json:
        listing = {
            "images": [{k: v for k, v in asdict(i).items() if k != "labels"} for i in images],
            "snapshots": [{**asdict(m), "disk_usage": disk} for m, disk in snapshots],
            "disks": [manifest_json(m, used) for m, used in disks],
        }
        print(json.dumps(listing, indent=2))
    else:
        print(render_images(images))
        for rendered in (render_snapshots(snapshots) if snapshots else None,
                         render_disks(disks) if disks else None):  # fmt: skip
            if rendered:
                print()
                print(rendered)
    return 0


def stale_mounts(env: Environment) -> list[str]:
    """Mount containers of runs that are gone (crashed, killed)."""
    names = podman(
        "ps", "--all", "--filter", f"label={MOUNT_LABEL}", "--format", "{{.Names}}"
    ).stdout.split()
    return [n for n in names if not mount_is_live(mount_locks_dir(env), n)]


def remove_stale_mounts(env: Environment) -> list[str]:
    stale = stale_mounts(env)
    for name in stale:
        podman("rm", "--force", name)
    remove_stale_locks(mount_locks_dir(env))
    return stale


def run_cache_prune(env: Environment, all_images: bool) -> int:
    """Remove what dead runs left, and images nothing uses (all of ours with
    --all); the host's shared images are never touched."""
    stale = remove_stale_mounts(env)
    argv = ["image", "prune", "--force", *(["--all"] if all_images else [])]
    removed = podman(*argv).stdout.split()
    keep = {i.image_id for i in list_images()}
    qemu, virtiofsd = find_qemu(), find_virtiofsd()
    versions = program_versions(qemu, virtiofsd, Accel.TCG) if qemu and virtiofsd else None
    boot, snapshots = prune_boot_cache(env, keep), prune_snapshots(env, keep, versions)
    prune_seen(env, keep)
    prune_verdicts(env, host_boot_id())
    stores = prune_install_stores(env, keep)
    # Half-made VMs first: their configs name base disks they keep.
    half_made = prune_half_made(env)
    disks = prune_disks(env, used_disk_keys(env))
    log.info(
        "Removed %d stale mounts, %d images, %d boot file entries, %d saved states,"
        " %d installer stores, %d cached disks and %d half-made VMs",
        len(stale), len(removed), boot, snapshots, stores, disks, half_made,
    )  # fmt: skip
    return 0
