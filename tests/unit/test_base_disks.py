import dataclasses
import json
import threading
from pathlib import Path

import pytest

from bootc_box.base_disks import (
    DiskOptions,
    commit_disk,
    disk_entries,
    find_disk,
    installing,
    list_disks,
    prune_disks,
    recorded_disk,
)
from bootc_box.boot import Disk
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError

NATIVE = Environment(in_box=False)
OPTIONS = DiskOptions("sha256id", "localhost/img", "raw", 10 << 30, "ext4", None, ("quiet",))


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "bootc-box" / "disks"


def install_into(slot: Path, content: bytes = b"disk") -> Path:
    (slot / OPTIONS.file_name).write_bytes(content)
    return commit_disk(NATIVE, OPTIONS, slot)


@pytest.mark.parametrize(
    "change",
    [{"image_id": "other"}, {"source": "quay.io/x/img"}, {"format": "qcow2"}, {"size": 20 << 30},
     {"filesystem": "xfs"}, {"root_size": "5G"}, {"kargs": ("quiet", "x=1")}, {"kargs": ()}],
)  # fmt: skip
def test_every_option_that_changes_the_disk_changes_the_key(change: dict[str, object]) -> None:
    assert dataclasses.replace(OPTIONS, **change).key != OPTIONS.key  # type: ignore[arg-type]
    assert dataclasses.replace(OPTIONS).key == OPTIONS.key


def test_a_committed_disk_is_found_and_listed(cache_home: Path) -> None:
    with find_disk(NATIVE, OPTIONS) as found:
        assert found is None
    with installing(NATIVE, OPTIONS) as slot:
        entry_file = install_into(slot)
    assert entry_file == cache_home / OPTIONS.key / "disk.raw"
    with find_disk(NATIVE, OPTIONS) as found:
        assert found == entry_file
    [(manifest, _used)] = list_disks(NATIVE)
    assert manifest.options == OPTIONS
    assert manifest.file_size == 4
    # No partial directory is left beside the entry.
    assert sorted(p.name for p in cache_home.iterdir() if p.name.startswith(".")) == []


def test_a_cached_disk_opens_in_the_format_its_manifest_records(cache_home: Path) -> None:
    qcow2 = dataclasses.replace(OPTIONS, format="qcow2")
    with installing(NATIVE, qcow2) as slot:
        (slot / qcow2.file_name).write_bytes(b"disk")
        entry_file = commit_disk(NATIVE, qcow2, slot)
    assert recorded_disk(NATIVE, qcow2.key) == Disk(entry_file, "qcow2")
    with pytest.raises(BootcBoxError, match=f"base disk {OPTIONS.key} .*it is not there") as err:
        recorded_disk(NATIVE, OPTIONS.key)
    assert err.value.hint == "remove the VMs built on it (bootc-box rm NAME) and make them again"
    # A format no manifest of bootc-box's has could name other files (vmdk extents).
    manifest = cache_home / qcow2.key / "manifest.json"
    data = json.loads(manifest.read_text())
    data["options"]["format"] = "vmdk"
    manifest.write_text(json.dumps(data))
    entry_file.rename(entry_file.with_name("disk.vmdk"))
    with pytest.raises(BootcBoxError, match="is in format 'vmdk'"):
        recorded_disk(NATIVE, qcow2.key)


def test_an_interrupted_install_leaves_no_entry(cache_home: Path) -> None:
    def interrupted() -> None:
        with installing(NATIVE, OPTIONS) as slot:
            (slot / OPTIONS.file_name).write_bytes(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    with find_disk(NATIVE, OPTIONS) as found:
        assert found is None
    assert not any(p.name.startswith(f".{OPTIONS.key}") for p in cache_home.iterdir())


def test_a_damaged_disk_is_deleted_not_used(cache_home: Path) -> None:
    with installing(NATIVE, OPTIONS) as slot:
        entry_file = install_into(slot)
    entry_file.write_bytes(b"truncated-or-grown")
    with find_disk(NATIVE, OPTIONS) as found:
        assert found is None
    assert not (cache_home / OPTIONS.key).exists()


@pytest.mark.parametrize("planted", ["disk.raw", "manifest.json"])
def test_a_cached_disk_is_never_read_through_a_link(
    cache_home: Path, tmp_path: Path, planted: str
) -> None:
    """A writer of the cache could point disk.raw at any file of the box, for
    a kept VM's guest to read, or to-disk to copy into its output."""
    with installing(NATIVE, OPTIONS) as slot:
        entry_file = install_into(slot)
    outside = tmp_path / "secret"
    link = entry_file.parent / planted
    outside.write_bytes(link.read_bytes())  # the same bytes, so only the link differs
    link.unlink()
    link.symlink_to(outside)
    with find_disk(NATIVE, OPTIONS) as found:
        assert found is None
    assert not (cache_home / OPTIONS.key).exists()
    assert outside.read_bytes()  # removed the link, not what it named


def test_a_second_run_of_one_key_waits_for_the_first_and_uses_its_disk() -> None:
    started, waited = threading.Event(), []

    def second() -> None:
        started.wait()
        with installing(NATIVE, OPTIONS), find_disk(NATIVE, OPTIONS) as found:
            waited.append(found)

    thread = threading.Thread(target=second)
    with installing(NATIVE, OPTIONS) as slot:
        thread.start()
        started.set()
        thread.join(timeout=0.5)
        assert thread.is_alive()  # held back while the first installs
        install_into(slot)
    thread.join(timeout=10)
    assert waited == [disk_entries(NATIVE).entry(OPTIONS.key) / "disk.raw"]


def test_prune_removes_disks_but_not_one_being_copied(cache_home: Path) -> None:
    with installing(NATIVE, OPTIONS) as slot:
        install_into(slot)
    with find_disk(NATIVE, OPTIONS) as found:
        assert found is not None
        assert prune_disks(NATIVE, set()) == 0  # a run copies it
    assert prune_disks(NATIVE, {OPTIONS.key}) == 0  # a VM's disk is built on it
    assert prune_disks(NATIVE, set()) == 1
    assert list(cache_home.iterdir()) == []
