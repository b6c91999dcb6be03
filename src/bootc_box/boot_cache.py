"""Boot files extracted from an image into the cache, keyed by the image's ID
(the digest of its config), checked against their recorded digests before each
use so a damaged entry is rebuilt rather than booted."""

import fcntl
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bootc_box import cache_entries
from bootc_box.cache_entries import (
    Entries,
    cache_dir,
    file_problem,
    manifest_problem,
    open_regular,
    read_manifest,
    write_manifest,
)
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kernel import BootFiles, Kernel, Uki, Vmlinuz, boot_files
from bootc_box.uki import read_uki, uki_kargs

log = logging.getLogger(__name__)

KERNEL = "vmlinuz"
INITRAMFS = "initramfs.img"


@dataclass(frozen=True)
class BootManifest:
    image: str
    kver: str
    # The digest of each file, as it was copied out of the image.
    files: dict[str, str]
    # Whether the files came out of a UKI, and the kernel arguments it
    # carries that still apply (uki.uki_kargs).
    uki: bool = False
    kargs: tuple[str, ...] = ()


def boot_entries(env: Environment) -> Entries:
    return Entries(cache_dir(env, "boot"), creating="extract")


def file_digest(path: Path) -> str:
    with open_regular(path) as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def entry_problem(entry: Path) -> str | None:
    """Why the entry cannot be trusted, or None when every file matches the
    digest its manifest recorded."""
    manifest = manifest_problem(entry, BootManifest)
    if isinstance(manifest, str):
        return manifest
    files = manifest.files
    for name in (KERNEL, INITRAMFS):
        path = entry / name
        problem = file_problem(path)
        if problem is not None:
            return f"{name} is {problem}"
        if files.get(name) != file_digest(path):
            return f"{name} does not match its recorded digest"
    return None


def entry_boot_files(entry: Path) -> BootFiles:
    manifest = read_manifest(entry, BootManifest)
    return BootFiles(manifest.kver, entry / KERNEL, entry / INITRAMFS, manifest.kargs, manifest.uki)


def find_cached_kernel(env: Environment, image_id: str) -> Kernel | None:
    """The kernel of an image whose boot files are cached, without
    mounting it; None when they are not (or the entry is damaged)."""
    entry = boot_entries(env).entry(image_id)
    if entry_problem(entry) is not None:
        return None
    files = entry_boot_files(entry)
    return Kernel(files.kver, files.uki)


def fill_entry(partial: Path, image_id: str, found: Vmlinuz | Uki) -> None:
    """The kernel and initramfs copied (or, from a UKI, cut) out of the image."""
    kargs: tuple[str, ...] = ()
    if isinstance(found, Uki):
        parts = read_uki(found.path, found.shown)
        (partial / KERNEL).write_bytes(parts.linux)
        (partial / INITRAMFS).write_bytes(parts.initrd)
        kargs = uki_kargs(parts.cmdline)
    else:
        shutil.copyfile(found.kernel, partial / KERNEL)
        shutil.copyfile(found.initramfs, partial / INITRAMFS)
    files = {name: file_digest(partial / name) for name in (KERNEL, INITRAMFS)}
    uki = isinstance(found, Uki)
    write_manifest(partial, BootManifest(image_id, found.kver, files, uki, kargs))


class BootFilesLease:
    """An image's cached boot files, held from take() until release() or the
    end of the block: a run holds them until its QEMU has read them, and
    takes them again for each boot after the first.

    Two locks per entry. Runs that boot from it hold `<id>.lock` shared, and
    whoever deletes the entry holds it exclusively, so nobody deletes it
    under them. Extracting takes `<id>.extract.lock` instead, which nobody
    holds while booting: runs of one image that start together on a cold
    cache wait for one extraction, never for another run's boot."""

    def __init__(self, env: Environment, image_id: str, root: Path, image: str) -> None:
        self.entries = boot_entries(env)
        self.image_id, self.root, self.image = image_id, root, image
        self._use: int | None = None

    def __enter__(self) -> "BootFilesLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def take(self) -> BootFiles:
        """The boot files, extracted first when missing or damaged; held from now."""
        entry = self.entries.entry(self.image_id)
        if self._use is None:
            self._use = self._hold_whole(entry)
        return entry_boot_files(entry)

    def release(self) -> None:
        if self._use is not None:
            use, self._use = self._use, None
            os.close(use)

    def _hold_whole(self, entry: Path) -> int:
        entries, image_id, image = self.entries, self.image_id, self.image
        while True:
            use = _lock(entries, entries.use_lock(image_id), fcntl.LOCK_SH, image)
            if entry_problem(entry) is None:
                return use
            os.close(use)
            extracting = _lock(entries, entries.create_lock(image_id), fcntl.LOCK_EX, image)
            try:
                problem = entry_problem(entry)  # another run may have extracted it meanwhile
                if problem is not None:
                    entries.remove_partial(image_id)
                    if entry.exists():
                        log.warning("The cached boot files of %s are damaged (%s); "
                                    "extracting them again", image, problem)  # fmt: skip
                        if not entries.delete(image_id):
                            raise _locked(image)
                    log.info("Extracting the boot files of %s", image)
                    with entries.partial(image_id) as partial:
                        fill_entry(partial, image_id, boot_files(self.root, image))
                        entries.commit(partial, image_id)
            finally:
                os.close(extracting)


def _locked(image: str) -> BootcBoxError:
    return BootcBoxError(
        f"another run kept the cached boot files of {image} locked"
        f" for {cache_entries.LOCK_TIMEOUT:.0f} s",
        "wait for the other runs of this image to boot, then rerun",
    )


def _lock(entries: Entries, path: Path, operation: int, image: str) -> int:
    fd = entries.lock(path, operation)
    if fd is None:
        raise _locked(image)
    return fd


def prune_boot_cache(env: Environment, keep: set[str]) -> int:
    """Remove the entries of images no longer in any store, skipping any a
    run is using or extracting; returns how many went."""
    return boot_entries(env).prune(lambda image_id: image_id not in keep)
