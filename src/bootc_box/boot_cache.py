"""Boot files extracted from an image into the cache, keyed by the image's ID
(the digest of its config), checked against their recorded digests before each
use so a damaged entry is rebuilt rather than booted."""

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bootc_box.environment import CACHE, Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kernel import BootFiles, boot_files
from bootc_box.locks import lock_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KERNEL = "vmlinuz"
INITRAMFS = "initramfs.img"
LOCK_TIMEOUT = 900.0


def boot_cache_dir(env: Environment) -> Path:
    if env.in_box:
        return CACHE / "boot"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bootc-box" / "boot"


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def entry_problem(entry: Path) -> str | None:
    """Why the entry cannot be trusted, or None when every file matches the
    digest its manifest recorded."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return "it has no manifest" if entry.exists() else "it is not there"
    except (OSError, ValueError):
        return "its manifest is unreadable"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not isinstance(manifest.get("kver"), str):
        return "its manifest is incomplete"
    for name in (KERNEL, INITRAMFS):
        path = entry / name
        if not path.is_file():
            return f"{name} is missing"
        if files.get(name) != file_digest(path):
            return f"{name} does not match its recorded digest"
    return None


def entry_boot_files(entry: Path) -> BootFiles:
    kver = json.loads((entry / MANIFEST).read_text())["kver"]
    return BootFiles(kver, entry / KERNEL, entry / INITRAMFS)


def extract_entry(entry: Path, image_id: str, boot: BootFiles) -> None:
    """Copy the boot files next to `entry` and rename them into place, so an
    entry is either whole or absent, whenever the copy is interrupted."""
    partial = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=entry.parent))
    try:
        shutil.copyfile(boot.kernel, partial / KERNEL)
        shutil.copyfile(boot.initramfs, partial / INITRAMFS)
        manifest = {
            "image": image_id,
            "kver": boot.kver,
            "files": {name: file_digest(partial / name) for name in (KERNEL, INITRAMFS)},
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        partial.chmod(0o755)
        partial.rename(entry)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def remove_partial(directory: Path, key: str) -> None:
    """Drop copies that runs killed mid-extraction left (we hold the key's
    exclusive lock, so none of them is still being written)."""
    for leftover in directory.glob(f".{key}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def cached_boot_files(
    env: Environment, image_id: str, root: Path, image: str
) -> Iterator[BootFiles]:
    """The image's kernel and initramfs from the cache, extracted from the
    mounted `root` first when missing or damaged.

    Two locks per entry. Runs that boot from it hold `<id>.lock` shared until
    the block ends (the caller ends it once QEMU has read the files), and
    whoever deletes the entry holds it exclusively, so nobody deletes it
    under them. Extracting takes `<id>.extract.lock` instead, which nobody
    holds while booting: runs of one image that start together on a cold
    cache wait for one extraction, never for another run's boot."""
    directory = boot_cache_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / image_id
    use_lock, extract_lock = directory / f"{image_id}.lock", directory / f"{image_id}.extract.lock"
    while True:
        use = _lock(use_lock, fcntl.LOCK_SH, image)
        if entry_problem(entry) is None:
            break
        os.close(use)
        extracting = _lock(extract_lock, fcntl.LOCK_EX, image)
        try:
            problem = entry_problem(entry)  # another run may have extracted it meanwhile
            if problem is not None:
                remove_partial(directory, image_id)
                if entry.exists():
                    log.warning("The cached boot files of %s are damaged (%s); "
                                "extracting them again", image, problem)  # fmt: skip
                    deleting = _lock(use_lock, fcntl.LOCK_EX, image)
                    try:
                        shutil.rmtree(entry)
                    finally:
                        os.close(deleting)
                log.info("Extracting the boot files of %s", image)
                extract_entry(entry, image_id, boot_files(root, image))
        finally:
            os.close(extracting)
    try:
        yield entry_boot_files(entry)
    finally:
        os.close(use)


def _lock(path: Path, operation: int, image: str) -> int:
    fd = lock_file(path, operation, LOCK_TIMEOUT, mode=0o644)
    if fd is None:
        raise BootcBoxError(
            f"another run kept the cached boot files of {image} locked for {LOCK_TIMEOUT:.0f} s",
            "wait for the other runs of this image to boot, then rerun",
        )
    return fd


def prune_boot_cache(env: Environment, keep: set[str]) -> int:
    """Remove the entries of images no longer in any store, skipping any a
    run is using or extracting; returns how many went."""
    directory = boot_cache_dir(env)
    removed = 0
    for use_lock in directory.glob("*.lock") if directory.is_dir() else ():
        key = use_lock.name.removesuffix(".lock")
        if "." in key or key in keep:
            continue
        extract_lock = directory / f"{key}.extract.lock"
        with ExitStack() as held:
            for path in (extract_lock, use_lock):
                fd = lock_file(path, fcntl.LOCK_EX, 0, mode=0o644)
                if fd is None:  # a run is extracting or booting from it
                    break
                held.callback(os.close, fd)
            else:
                remove_partial(directory, key)
                if (directory / key).exists():
                    shutil.rmtree(directory / key)
                    removed += 1
                # Deleted while we hold them, so no run relies on them.
                use_lock.unlink()
                extract_lock.unlink()
    return removed
