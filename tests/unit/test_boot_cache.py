import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bootc_box import boot_cache, cache_entries
from bootc_box.boot_cache import (
    INITRAMFS,
    KERNEL,
    BootFilesLease,
    entry_problem,
    prune_boot_cache,
)
from bootc_box.cache_entries import cache_dir
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.kernel import BootFiles
from tests.unit.test_kernel import add_kernel

NATIVE = Environment(in_box=False)
IMAGE_ID = "ab" * 32


@contextmanager
def cached_boot_files(
    env: Environment, image_id: str, root: Path, image: str
) -> Iterator[BootFiles]:
    """A run's use of the boot files, from its first take to its end."""
    with BootFilesLease(env, image_id, root, image) as lease:
        yield lease.take()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg/bootc-box/boot"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    add_kernel(tmp_path / "root", "6.12.0")
    return tmp_path / "root"


def test_a_first_use_extracts_a_verified_copy(
    cache: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img") as boot:
        assert boot.kver == "6.12.0"
        assert boot.kernel == cache / IMAGE_ID / KERNEL
        assert boot.kernel.read_bytes() == b"kernel 6.12.0"
        assert boot.initramfs.read_bytes() == b"initramfs"
    assert entry_problem(cache / IMAGE_ID) is None
    assert "Extracting the boot files of img" in caplog.text
    assert sorted(p.name for p in cache.iterdir()) == [
        IMAGE_ID, f"{IMAGE_ID}.extract.lock", f"{IMAGE_ID}.lock"
    ]  # fmt: skip


def test_a_good_entry_is_used_without_touching_the_image(
    cache: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img"):
        pass
    caplog.clear()
    caplog.set_level(logging.INFO)
    (root / "usr/lib/modules/6.12.0/vmlinuz").write_bytes(b"another kernel")
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img") as boot:
        assert boot.kernel.read_bytes() == b"kernel 6.12.0"
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: (e / INITRAMFS).write_bytes(b"initramfz"), "initramfs.img does not match"),
        (lambda e: (e / KERNEL).unlink(), "vmlinuz is missing"),
        (lambda e: (e / "manifest.json").write_text("{"), "its manifest is unreadable"),
        (lambda e: (e / "manifest.json").write_text('{"kver": 6}'), "its manifest is unreadable"),
        (lambda e: (e / "manifest.json").unlink(), "it has no manifest"),
    ],
)
def test_a_damaged_entry_is_rebuilt(
    cache: Path,
    root: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], object],
    problem: str,
) -> None:
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img"):
        pass
    damage(cache / IMAGE_ID)
    assert problem in str(entry_problem(cache / IMAGE_ID))
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img") as boot:
        assert boot.initramfs.read_bytes() == b"initramfs"
    assert f"The cached boot files of img are damaged ({problem}" in caplog.text
    assert entry_problem(cache / IMAGE_ID) is None


@pytest.mark.parametrize(
    ("planted", "problem"),
    [
        (KERNEL, "vmlinuz is not a regular file"),
        (INITRAMFS, "initramfs.img is not a regular file"),
        ("manifest.json", "its manifest is unreadable"),
        ("", "it is a symbolic link"),
    ],
)
def test_a_file_planted_as_a_link_is_never_followed_and_its_target_stays(
    cache: Path, root: Path, tmp_path: Path, planted: str, problem: str
) -> None:
    """Whoever writes a shared cache could link an entry's files to host
    files; with the same bytes, the digests would even match."""
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img"):
        pass
    link = cache / IMAGE_ID / planted
    outside = tmp_path / "outside"
    link.rename(outside)
    link.symlink_to(outside)
    assert entry_problem(cache / IMAGE_ID) == problem
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img") as boot:
        assert not any(p.is_symlink() for p in (boot.kernel.parent, boot.kernel, boot.initramfs))
    assert entry_problem(cache / IMAGE_ID) is None
    assert outside.exists()


def test_an_interrupted_extraction_leaves_no_entry(
    cache: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: Path) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(boot_cache, "file_digest", fail)
    with pytest.raises(KeyboardInterrupt), cached_boot_files(NATIVE, IMAGE_ID, root, "img"):
        pass
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{IMAGE_ID}.extract.lock",
        f"{IMAGE_ID}.lock",
    ]


def test_an_image_without_a_kernel_leaves_no_entry(cache: Path, tmp_path: Path) -> None:
    with (
        pytest.raises(BootcBoxError, match="has no kernel"),
        cached_boot_files(NATIVE, IMAGE_ID, tmp_path, "img"),
    ):
        pass
    assert not (cache / IMAGE_ID).exists()


def test_a_rebuild_waits_for_runs_booting_from_the_entry_and_gives_up_with_a_hint(
    cache: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_entries, "LOCK_TIMEOUT", 0.3)
    with cached_boot_files(NATIVE, IMAGE_ID, root, "img"):
        pass
    (cache / IMAGE_ID / KERNEL).write_bytes(b"damaged")
    holder = os.open(cache / f"{IMAGE_ID}.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_SH)  # a run whose QEMU is reading the files
    try:
        with (
            pytest.raises(BootcBoxError, match="locked for 0 s") as err,
            cached_boot_files(NATIVE, IMAGE_ID, root, "img"),
        ):
            pass
        assert "wait for the other runs" in str(err.value)
        assert (cache / IMAGE_ID / KERNEL).read_bytes() == b"damaged"
    finally:
        os.close(holder)


def test_prune_removes_entries_of_gone_images_unless_in_use(cache: Path, root: Path) -> None:
    kept, gone, busy = "1" * 64, "2" * 64, "3" * 64
    for key in (kept, gone, busy):
        with cached_boot_files(NATIVE, key, root, "img"):
            pass
    (cache / f".{gone}.partial-x").mkdir()
    with cached_boot_files(NATIVE, busy, root, "img"):
        assert prune_boot_cache(NATIVE, keep={kept}) == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [kept, f"{kept}.lock", f"{kept}.extract.lock", busy, f"{busy}.lock", f"{busy}.extract.lock"]
    )


def test_a_lease_lets_prune_at_the_files_only_between_release_and_the_next_take(
    cache: Path, root: Path
) -> None:
    """A run holds the boot files until its QEMU has read them, and takes
    them again (extracting them anew if pruned meanwhile) for a second boot."""
    with BootFilesLease(NATIVE, IMAGE_ID, root, "img") as lease:
        boot = lease.take()
        assert lease.take() == boot  # taking twice holds once
        assert prune_boot_cache(NATIVE, keep=set()) == 0
        lease.release()
        assert prune_boot_cache(NATIVE, keep=set()) == 1
        assert not boot.kernel.exists()
        assert lease.take() == boot
        assert boot.kernel.read_bytes() == b"kernel 6.12.0"
        assert prune_boot_cache(NATIVE, keep=set()) == 0
    assert prune_boot_cache(NATIVE, keep=set()) == 1  # the block's end let go


def test_runs_of_one_image_starting_together_extract_once_and_boot_together(
    cache: Path, root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Cold cache, four runs at once: one extracts, and then all four are
    inside at the same time (as four VMs booting), none waiting for another
    to finish its boot."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(cache_entries, "LOCK_TIMEOUT", 20.0)
    runs = 4
    # The worst interleaving, made certain: every run has found the entry
    # missing before any of them extracts it.
    all_looked, all_inside = (
        threading.Barrier(runs, timeout=20),
        threading.Barrier(runs, timeout=20),
    )
    looked = threading.local()
    real_entry_problem = boot_cache.entry_problem

    def entry_problem(entry: Path) -> str | None:
        problem = real_entry_problem(entry)
        if not getattr(looked, "once", False):
            looked.once = True
            all_looked.wait()
        return problem

    monkeypatch.setattr(boot_cache, "entry_problem", entry_problem)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with cached_boot_files(NATIVE, IMAGE_ID, root, "img") as boot:
                assert boot.kernel.read_bytes() == b"kernel 6.12.0"
                all_inside.wait()
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert caplog.text.count("Extracting the boot files of img") == 1


def test_a_kind_of_entry_planted_as_a_link_in_the_volume_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_entries, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache/boot").symlink_to(tmp_path)
    with pytest.raises(BootcBoxError, match="cache/boot is a symbolic link") as err:
        cache_dir(Environment(in_box=True), "boot")
    assert f"delete it (rm {tmp_path}/cache/boot)" in str(err.value)
    assert cache_dir(Environment(in_box=True), "snapshots") == tmp_path / "cache/snapshots"
