"""Image-only stores for to-disk's installer VM under /cache/install-stores
(see cache-layout.md): a containers store holding one image and nothing
else, which is all the installer is given, so that it sees none of the other
images, containers, volumes or secrets of the stores the image came from.
Made once per image and kept, so that the next install of the image (other
options, a kept VM) skips copying it again; without a volume at /cache, made
for the one install in a scratch directory."""

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootc_box.cache_entries import (
    Entries,
    cache_dir,
    manifest_problem,
    write_manifest,
)
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import podman

log = logging.getLogger(__name__)

GRAPH = "graph"


@dataclass(frozen=True)
class StoreManifest:
    image_id: str
    created: str


def store_entries(env: Environment) -> Entries:
    return Entries(cache_dir(env, "install-stores"), creating="copy")


def store_key(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def entry_problem(entry: Path, key: str) -> str | None:
    manifest = manifest_problem(entry, StoreManifest)
    if isinstance(manifest, str):
        return manifest
    if store_key(manifest.image_id) != key:
        return "its manifest is for another image"
    graph = entry / GRAPH
    if graph.is_symlink() or not graph.is_dir():
        return f"its {GRAPH} is not a directory"
    return None


def copy_image(image_id: str, store: Path) -> Path:
    """A new store at `store` holding `image_id` alone; its graph root."""
    graph = store / GRAPH
    # skip_mount_home: no private bind mount of the new store's overlay
    # directory, which would outlive this command in the mount namespace.
    target = f"containers-storage:[overlay@{graph}+{store / 'run'}:overlay.skip_mount_home=true]"
    log.info("Copying %s into a store of its own for the installer", image_id[:12])
    podman("push", "--quiet", image_id, f"{target}@{image_id}")
    return graph


@contextmanager
def image_only_store(env: Environment, image_id: str) -> Iterator[Path]:
    """The graph root of a store holding `image_id` alone, held against
    deletion until the block ends."""
    if not env.cache_kept:
        # Beside a copy of the store, a tmpfs /cache would hold it in memory.
        with tempfile.TemporaryDirectory(prefix="bootc-box-install-", dir="/var/tmp") as name:
            yield copy_image(image_id, Path(name))
        return
    entries, key = store_entries(env), store_key(image_id)
    damaged = "The installer's store %s is damaged (%s); copying the image again"
    with entries.find(key, entry_problem, damaged) as entry:
        if entry is not None:
            yield entry / GRAPH
            return
    make_store(entries, key, image_id)
    with entries.find(key, entry_problem, damaged) as entry:
        if entry is None:
            raise BootcBoxError(
                "the installer's store just made was removed (by cache prune?)", "run again"
            )
        yield entry / GRAPH


def make_store(entries: Entries, key: str, image_id: str) -> None:
    """Copy the image into a new entry, unless another run made it while
    this one waited for it to finish."""
    waiting = "Another run is copying this image for its installer; waiting for it"
    with entries.making(key, waiting, "copy of this image for its installer") as partial:
        if entry_problem(entries.entry(key), key) is None:
            return
        copy_image(image_id, partial)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        write_manifest(partial, StoreManifest(image_id, created))
        entries.commit(partial, key, entry_problem)


def prune_install_stores(env: Environment, keep: set[str]) -> int:
    """Remove the stores of images no longer in any store, skipping any an
    install is using or making; returns how many went."""
    kept = {store_key(image_id) for image_id in keep}
    return store_entries(env).prune(lambda key: key not in kept)
