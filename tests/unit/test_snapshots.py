"""Saved VM states: their key, their entries and the locks around them, on
temp directories (no QEMU: the state file here is bytes we write)."""

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootc_box.boot import KernelBoot
from bootc_box.credentials import Login
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.migration import migration_done
from bootc_box.network import Network
from bootc_box.publish import Publish
from bootc_box.qemu import Accel, QemuSpec
from bootc_box.snapshots import (
    entry_problem,
    find_snapshot,
    host_cpu_flags,
    list_snapshots,
    machine_argv,
    new_snapshot,
    prune_seen,
    prune_snapshots,
    seen_before,
    snapshot_key,
)
from bootc_box.warm import Start, Warm, choose_start

NATIVE = Environment(in_box=False)
IMAGE_ID = "ab" * 32
VERSIONS = {
    "qemu": "QEMU emulator version 10.0.13",
    "virtiofsd": "virtiofsd 1.13.2",
    "bootc-box": "0.1.0",
}


def machine(run: str = "run-1", **changes: Any) -> QemuSpec:
    """A machine as a run would start it, its per-run paths under `run`."""
    base = Path("/run/bootc-box/vms") / run
    spec = QemuSpec(
        accel=Accel.TCG,
        memory_mib=2048,
        cpus=2,
        boot=KernelBoot(
            Path("/cache/boot") / IMAGE_ID / "vmlinuz",
            Path("/cache/boot") / IMAGE_ID / "initramfs.img",
            base / "rootfs.sock",
            kver=run,
        ),
        network=Network(base / "network.sock", 40000 + len(run)),
        console_log=base / "console.log",
        credential_files=(base / "ssh.authorized_keys.root.smbios",),
        shares=(("bind0", base / "bind0.sock"),),
        qmp_socket=base / "qmp.sock",
    )
    return dataclasses.replace(spec, **changes)


def test_runs_of_one_machine_share_a_key_whatever_their_paths_and_ports() -> None:
    one = machine("run-1")
    other = machine(
        "another-run",
        network=Network(Path("/elsewhere/net.sock"), 41000, (Publish("127.0.0.1", 8080, 80),)),
        incoming=True,
        prealloc=True,
    )
    assert machine_argv(one) == machine_argv(other)
    assert snapshot_key(IMAGE_ID, one, VERSIONS) == snapshot_key(IMAGE_ID, other, VERSIONS)


@pytest.mark.parametrize(
    "change",
    [
        {"memory_mib": 4096},
        {"cpus": 1},
        {"accel": Accel.KVM},
        {"boot": KernelBoot(Path("/k"), Path("/i"), Path("/r.sock"), ("quiet",))},
        {"shares": ()},
    ],
)
def test_anything_the_guest_sees_changes_the_key(change: dict[str, Any]) -> None:
    assert snapshot_key(IMAGE_ID, machine(), VERSIONS) != snapshot_key(
        IMAGE_ID, machine(**change), VERSIONS
    )


def test_another_image_or_program_version_changes_the_key() -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    assert key != snapshot_key("cd" * 32, machine(), VERSIONS)
    assert key != snapshot_key(IMAGE_ID, machine(), {**VERSIONS, "qemu": "QEMU 10.1.0"})


def test_the_host_cpu_counts_only_as_its_flags() -> None:
    one = "processor\t: 0\nmodel name\t: A\nflags\t\t: fpu sse2 avx\n"
    same = "processor\t: 0\nmodel name\t: B\nflags\t\t: fpu sse2 avx\n"
    fewer = "processor\t: 0\nmodel name\t: A\nflags\t\t: fpu sse2\n"
    assert host_cpu_flags(one) == host_cpu_flags(same) != host_cpu_flags(fewer)


def test_query_migrate_replies() -> None:
    assert migration_done({"return": {"status": "completed"}})
    assert not migration_done({"return": {"status": "active"}})
    assert not migration_done({"return": {}})  # before migrate-incoming begins
    with pytest.raises(BootcBoxError, match="migration failed: Unable to read"):
        migration_done({"return": {"status": "failed", "error-desc": "Unable to read"}})


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg/bootc-box/snapshots"


def save(
    key: str, image_id: str = IMAGE_ID, state: bytes = b"\1" * 4096, *, agent: bool = False
) -> None:
    with new_snapshot(NATIVE, key) as new:
        assert new is not None
        new.state.write_bytes(state)
        new.commit(
            image_id, "localhost/fixture", machine(), VERSIONS, new.login.host_key, agent=agent
        )


@pytest.mark.parametrize("agent", [True, False])
def test_a_state_says_whether_the_unit_was_saved_waiting(cache: Path, agent: bool) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key, agent=agent)
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is not None
        assert snapshot.agent is agent


def test_a_manifest_of_before_the_agent_says_no_unit_waits(cache: Path) -> None:
    """One an older bootc-box wrote; and one whose field is no boolean."""
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key, agent=True)
    path = cache / key / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["agent"]
    path.write_text(json.dumps(manifest))
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is not None
        assert snapshot.agent is False
        path.write_text(json.dumps({**manifest, "agent": "yes"}))
        assert snapshot.agent is False


def test_a_saved_state_is_found_whole_with_its_bootstrap_key(cache: Path) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    with find_snapshot(NATIVE, key) as nothing:
        assert nothing is None
    save(key)
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is not None
        assert snapshot.state.read_bytes() == b"\1" * 4096
        assert snapshot.key.stat().st_mode & 0o777 == 0o600
        authorized, tmpfiles = (c.read_text() for c in snapshot.credentials)
        assert authorized.startswith("io.systemd.credential.binary:ssh.authorized_keys.root=")
        assert tmpfiles.startswith("io.systemd.credential.binary:tmpfiles.extra=")
        assert snapshot.host_key.read_text().startswith("ssh-ed25519 ")
    manifest = json.loads((cache / key / "manifest.json").read_text())
    assert manifest["image_id"] == IMAGE_ID
    assert manifest["state_size"] == 4096
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_a_truncated_state_is_not_loaded_but_deleted(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    os.truncate(cache / key / "state", 100)
    assert entry_problem(cache / key, key) == "its state file has 100 bytes, not the 4096 saved"
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is None
    assert "cannot be loaded (its state file has 100 bytes" in caplog.text
    assert not (cache / key).exists()


def test_an_entry_saved_for_another_key_or_missing_files_is_not_loaded(cache: Path) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    assert entry_problem(cache / key, "0" * 32) == "its manifest is for another machine"
    (cache / key / "id_ed25519").unlink()
    assert entry_problem(cache / key, key) == "id_ed25519 is missing"
    assert entry_problem(cache / "nothing", key) == "it is not there"


@pytest.mark.parametrize(
    "planted",
    [
        "ssh.authorized_keys.root.smbios",
        "tmpfiles.extra.smbios",
        "ssh_host_ed25519_key.pub",
        "id_ed25519",
        "state",
        "manifest.json",
        "",
    ],
)
def test_a_file_planted_as_a_link_is_not_loaded_and_its_target_stays(
    cache: Path, tmp_path: Path, planted: str
) -> None:
    """A link in a shared cache would have QEMU hand a host file to the
    guest as its credential, or load one as its memory."""
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    link = cache / key / planted
    outside = tmp_path / "outside"
    link.rename(outside)
    link.symlink_to(outside)
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is None
    assert not (cache / key).exists()
    assert outside.exists()


def test_a_restore_reads_copies_of_the_credential_and_key_never_through_a_link(
    cache: Path, tmp_path: Path
) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is not None
        login = snapshot.copy_out(tmp_path)
        credentials, login_key, host_key = login.credentials, login.key, login.host_key
        assert [c.read_bytes() for c in credentials] == [
            c.read_bytes() for c in snapshot.credentials
        ]
        assert login_key.read_bytes() == snapshot.key.read_bytes()
        assert {*(c.parent for c in credentials), login_key.parent} == {tmp_path}
        assert f"{host_key}\n" == snapshot.host_key.read_text()
        # Swapped for a link after it was checked.
        secret = tmp_path / "secret"
        secret.write_text("host secret")
        snapshot.credentials[1].unlink()
        snapshot.credentials[1].symlink_to(secret)
        with pytest.raises(OSError, match="symbolic links"):
            snapshot.copy_out(tmp_path / "again")


@pytest.mark.parametrize(
    "planted", ["ssh-rsa AAAA", "ssh-ed25519 -oProxyCommand=sh", "ssh-ed25519 AA%hA", ""]
)
def test_a_host_key_that_is_no_ed25519_key_is_not_loaded(cache: Path, planted: str) -> None:
    """The saved host key ends up in ssh's options: whoever can write the
    cache must not put anything else there."""
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    (cache / key / "ssh_host_ed25519_key.pub").write_text(planted + "\n")
    assert entry_problem(cache / key, key) == "ssh_host_ed25519_key.pub holds no ed25519 host key"
    with find_snapshot(NATIVE, key) as snapshot:
        assert snapshot is None


def test_one_run_saves_a_key_and_the_others_boot_without_saving(cache: Path) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    with new_snapshot(NATIVE, key) as first:
        assert first is not None
        with new_snapshot(NATIVE, key) as second:
            assert second is None
    # The first never committed: nothing is left of it but the locks.
    assert sorted(p.name for p in cache.iterdir()) == [f"{key}.save.lock"]


@pytest.fixture
def loading(cache: Path) -> Iterator[str]:
    """A saved key that another run is loading right now."""
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    holder = os.open(cache / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        yield key
    finally:
        os.close(holder)


def test_a_state_being_loaded_is_neither_replaced_nor_pruned(cache: Path, loading: str) -> None:
    with new_snapshot(NATIVE, loading) as new:
        assert new is None
    assert prune_snapshots(NATIVE, keep_images=set()) == 0
    assert entry_problem(cache / loading, loading) is None


def test_prune_drops_states_of_gone_images_and_ls_shows_the_rest(cache: Path) -> None:
    kept = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    gone = snapshot_key("cd" * 32, machine(), VERSIONS)
    save(kept)
    save(gone, image_id="cd" * 32)
    (cache / f".{gone}.partial-x").mkdir()
    assert prune_snapshots(NATIVE, keep_images={IMAGE_ID}) == 1
    [(manifest, disk)] = list_snapshots(NATIVE)
    assert (manifest.key, manifest.image_id, manifest.memory_mib) == (kept, IMAGE_ID, 2048)
    assert disk >= 4096
    assert sorted(p.name for p in cache.iterdir()) == sorted([kept, f"{kept}.save.lock"])


def test_prune_drops_states_that_other_program_versions_saved(cache: Path) -> None:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    save(key)
    assert prune_snapshots(NATIVE, {IMAGE_ID}, VERSIONS) == 0
    assert prune_snapshots(NATIVE, {IMAGE_ID}, {**VERSIONS, "qemu": "QEMU 10.1.0"}) == 1
    assert list_snapshots(NATIVE) == []


def first_and_second_starts(tmp_path: Path, eager: bool) -> list[Start]:
    key = snapshot_key(IMAGE_ID, machine(), VERSIONS)
    starts = []
    for run in ("first", "second"):
        warm = Warm(key, VERSIONS, IMAGE_ID, eager=eager)
        (tmp_path / run).mkdir()
        cold = Start(Login(Path("/nonexistent/key"), (), ""))
        with choose_start(NATIVE, cold, warm, tmp_path / run) as start:
            starts.append(start)
    return starts


def test_the_first_boot_of_a_machine_saves_nothing_and_the_second_saves(
    cache: Path, tmp_path: Path
) -> None:
    """--warm auto: a state only later runs could use is not worth its save
    to an image that is booted once."""
    first, second = first_and_second_starts(tmp_path, eager=False)
    assert (first.kind, first.save) == ("cold", None)
    assert second.kind == "cold"
    assert second.save is not None
    assert [p.name for p in (cache.parent / "seen").iterdir()] == [second.save.name]


def test_warm_always_saves_after_the_first_boot(cache: Path, tmp_path: Path) -> None:
    first, _ = first_and_second_starts(tmp_path, eager=True)
    assert first.save is not None
    assert not (cache.parent / "seen").exists()


def test_a_link_planted_as_a_note_is_not_followed(cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("untouched")
    seen = cache.parent / "seen"
    seen.mkdir(parents=True)
    (seen / "k").symlink_to(target)
    assert seen_before(NATIVE, "k", IMAGE_ID)
    assert target.read_text() == "untouched"


def test_prune_drops_the_notes_of_gone_images_and_anything_else_there(cache: Path) -> None:
    assert not seen_before(NATIVE, "kept", IMAGE_ID)
    assert not seen_before(NATIVE, "gone", "cd" * 32)
    seen = cache.parent / "seen"
    (seen / "a-link").symlink_to("/etc/passwd")
    (seen / "a-directory").mkdir()
    assert prune_seen(NATIVE, {IMAGE_ID}) == 3
    assert [p.name for p in seen.iterdir()] == ["kept"]
    assert Path("/etc/passwd").exists()
