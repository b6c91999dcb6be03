"""Warm starts: the first run of an image saves its VM once SSH answers, and
later runs restore that state instead of booting. The first run is the
session's cold boot (conftest.py's `first_boot`); this module's volume starts
with a copy of the state it saved, as a volume shared by two hosts' boxes
would. Its tests in order: each leaves a saved state for the next."""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_box.network import free_port
from bootc_box.snapshots import HOST_KEY
from bootc_box.ssh import SshTarget, ssh_argv
from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    GUEST_WRITES,
    Boot,
    CacheVolume,
    box_argv,
    container_logs,
    podman,
    seeded_cache_volume,
    wait_for_log,
)


def run_box(volume: CacheVolume, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        box_argv(*args, volume=volume.name, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip


@dataclass(frozen=True)
class Warm:
    volume: CacheVolume
    first: Boot
    # The entry the first run saved, copied here (later tests save others beside it).
    saved: tuple[Path, ...]

    def entry(self) -> Path:
        [entry] = self.saved
        return entry


@pytest.fixture(scope="module")
def warm(first_boot: Boot) -> Iterator[Warm]:
    with seeded_cache_volume(first_boot) as volume:
        yield Warm(volume, first_boot, tuple(volume.snapshots()))


def test_the_first_run_boots_cold_and_saves_the_vm_before_the_command(warm: Warm) -> None:
    assert warm.first.returncode == 7, warm.first.stderr
    assert "bootc-box: Saved the VM's state for the next runs of" in warm.first.stderr
    assert "VM up in" in warm.first.stderr
    assert ", cold (" in warm.first.stderr
    # What the first run saved, on its own volume.
    [entry] = warm.first.snapshots
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["image_id"] == podman("image", "inspect", "--format", "{{.Id}}", FIXTURE)
    state = entry / "state"
    assert state.stat().st_size == manifest["state_size"] > 2048 * 2**20  # all of the RAM
    # Untouched guest memory stays a hole: far less on disk than 2 GiB.
    assert state.stat().st_blocks * 512 < 1024 * 2**20
    assert (entry / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert warm.first.leftovers == ()


def test_a_later_run_restores_and_sees_nothing_an_earlier_run_wrote(warm: Warm) -> None:
    # The first run wrote these in /etc and /var after its VM was saved.
    absent = " && ".join(f"test ! -e {path}" for path in GUEST_WRITES)
    result = run_box(warm.volume, "run", FIXTURE, "--", "sh", "-c", f"{absent} && echo clean")
    assert result.returncode == 0, result.stderr
    assert "bootc-box: Restoring localhost/bootc-box-fixture:latest from its saved state" in (
        result.stderr
    )
    assert ", restored (" in result.stderr
    assert result.stdout.strip() == "clean"


def test_a_restored_command_that_needs_no_login_skips_it_and_one_given_input_logs_in(
    warm: Warm,
) -> None:
    """Without -i (stdin is /dev/null) the command goes to the unit the
    state was saved with, waiting beside sshd; with -i its input reaches it
    over SSH, in a guest made its own machine first (new host keys)."""
    before = time.time()
    quiet = run_box(warm.volume, "run", FIXTURE, "--", "sh", "-c", "date +%s.%N; echo $HOME")
    after = time.time()
    assert quiet.returncode == 0, quiet.stderr
    assert ", restored (" in quiet.stderr
    assert "Running the command over virtio-serial" in quiet.stderr
    clock, home = quiet.stdout.split()
    assert before - 0.25 <= float(clock) <= after + 1  # the host's time, to the millisecond
    assert home == "/root"

    script = "read -r line; echo got=$line; cat /etc/ssh/ssh_host_ed25519_key.pub"
    given = subprocess.run(
        box_argv("run", FIXTURE, "--", "sh", "-c", script,
                 volume=warm.volume.name, options=("--rm", "-i")),
        input="hello\n", capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert ", restored (" in given.stderr
    assert "virtio-serial" not in given.stderr
    got, host_key = given.stdout.splitlines()
    assert got == "got=hello"
    saved = (warm.entry() / HOST_KEY).read_text().split()[:2]
    assert host_key.split()[:2] != saved


@dataclass(frozen=True)
class Sibling:
    container: str
    key: Path
    port: int

    def ssh(self, command: str, key: Path | None = None) -> "subprocess.CompletedProcess[str]":
        target = SshTarget("127.0.0.1", self.port, "root", key or self.key)
        return subprocess.run(
            ssh_argv(target, ["sh", "-c", command]),
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    def host_key(self) -> str:
        scan = subprocess.run(
            ["ssh-keyscan", "-p", str(self.port), "-t", "ed25519", "127.0.0.1"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        [line] = scan.stdout.splitlines()
        return line.split()[-1]


def test_restored_siblings_are_machines_of_their_own(warm: Warm, tmp_path: Path) -> None:
    """Two VMs restored from one state at once: each lets in only its own
    run's key (not its sibling's, not the snapshot's bootstrap key), serves
    its own host key, and keeps the host's time."""
    siblings = []
    try:
        for name in ("a", "b"):
            key = tmp_path / f"id_{name}"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
            sibling = Sibling(f"bootc-box-test-warm-{name}-{time.monotonic_ns()}", key, free_port())
            podman(*box_argv(
                "run", "--ssh-key", str(key), "-p", f"{sibling.port}:22", FIXTURE,
                volume=warm.volume.name,
                # The VMs' forwarded ports then listen on the host's loopback.
                options=("-d", "--name", sibling.container, "--network", "host",
                         "-v", f"{tmp_path}:{tmp_path}:ro"),
            )[1:])  # fmt: skip
            siblings.append(sibling)
        for sibling in siblings:
            wait_for_log(sibling.container, "is running; stop it", time.monotonic() + 300)
            assert "Restoring localhost/bootc-box-fixture:latest" in container_logs(
                sibling.container
            )
        a, b = siblings
        for sibling, other in ((a, b), (b, a)):
            before = time.time()
            result = sibling.ssh("date +%s.%N")
            after = time.time()
            assert result.returncode == 0, result.stderr
            assert before - 2 <= float(result.stdout) <= after + 2
            assert sibling.ssh("true", key=other.key).returncode == 255
            assert sibling.ssh("true", key=warm.entry() / "id_ed25519").returncode == 255
        assert a.host_key() != b.host_key()
    finally:
        for sibling in siblings:
            podman("rm", "--force", sibling.container)


def test_a_state_qemu_cannot_load_is_dropped_and_the_run_boots_cold(warm: Warm) -> None:
    """The right size, but not a state QEMU wrote: QEMU refuses it, and the
    run boots cold with one warning instead of failing. The cold boot is cut
    short (--timeout: cold boots are seen through elsewhere); a copy of the
    entry is put back after, for the tests below."""
    kept = warm.volume.path / "kept-entry"
    subprocess.run(["cp", "-a", "--sparse=always", warm.entry(), kept], check=True)
    try:
        with (warm.entry() / "state").open("r+b") as f:
            f.write(b"\0" * 4096)
        result = run_box(warm.volume, "run", "--timeout", "3", FIXTURE, "--", "true")
        assert result.returncode == 125, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
        assert any("could not load the saved state" in w and "booting cold" in w for w in warnings)
        assert "the VM did not answer SSH within 3 s" in result.stderr.splitlines()[-1]
        assert not warm.entry().exists()
    finally:
        # Also after a failure: the tests below need the entry whole.
        subprocess.run(["rm", "-rf", warm.entry()], check=True)
        kept.rename(warm.entry())


def test_a_new_image_misses_restores_with_this_runs_bind_and_is_pruned_once_gone(
    warm: Warm, tmp_path: Path
) -> None:
    """A new image boots cold and saves nothing (--warm auto: an image
    booted once, as in CI, does not pay for a save); its second run boots
    cold and saves; its third restores, here with another --bind directory
    at the same guest path, and sees that one's files. Once the image is
    gone, prune drops its state and its note, and keeps the fixture's."""
    relabeled = "localhost/bootc-box-fixture-relabeled:test"
    (tmp_path / "Containerfile").write_text(f"FROM {FIXTURE}\nLABEL bootc-box.test=relabeled\n")
    podman("build", "-t", relabeled, str(tmp_path))
    relabeled_id = podman("image", "inspect", "--format", "{{.Id}}", relabeled)
    try:
        outputs = []
        for name in ("first", "second", "third"):
            shared = tmp_path / name
            shared.mkdir()
            (shared / f"{name}.txt").write_text(f"from the {name} run\n")
            result = subprocess.run(
                box_argv("run", "--bind", f"{shared}:/mnt/shared:ro", relabeled, "--",
                         "cat", f"/mnt/shared/{name}.txt",
                         volume=warm.volume.name, options=("--rm", "-v", f"{shared}:{shared}:ro")),
                capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            outputs.append(result)
            if name == "first":
                listing = json.loads(run_box(warm.volume, "cache", "ls", "--json").stdout)
                assert relabeled not in {s["image"] for s in listing["snapshots"]}
        first, second, third = (o.stderr for o in outputs)
        assert ", cold (" in first
        assert "save" not in first.split("VM up in")[1].splitlines()[0]
        assert "The first boot of this image and machine: the next run saves" in first
        assert ", cold (" in second
        assert "Saved the VM's state for the next runs" in second
        assert ", restored (" in third
        assert outputs[2].stdout == "from the third run\n"
        listing = json.loads(run_box(warm.volume, "cache", "ls", "--json").stdout)
        assert {s["image"] for s in listing["snapshots"]} == {FIXTURE, relabeled}
    finally:
        podman("rmi", relabeled)
    prune = run_box(warm.volume, "cache", "prune")
    assert prune.returncode == 0, prune.stderr
    assert ", 1 saved states" in prune.stderr
    listing = json.loads(run_box(warm.volume, "cache", "ls", "--json").stdout)
    assert {s["image"] for s in listing["snapshots"]} == {FIXTURE}
    notes = [p.read_text() for p in (warm.volume.path / "seen").iterdir()]
    assert relabeled_id not in notes


def test_a_truncated_state_is_refused_before_qemu_reads_it_and_dropped(warm: Warm) -> None:
    """Last: it leaves no saved state of the fixture. The cold boot after
    the refusal is cut short (--timeout), which also shows that a failed
    cold boot saves nothing."""
    state = warm.entry() / "state"
    os.truncate(state, state.stat().st_size // 2)
    others = [entry for entry in warm.volume.snapshots() if entry != warm.entry()]
    result = run_box(warm.volume, "run", "--timeout", "3", FIXTURE, "--", "true")
    assert result.returncode == 125, result.stderr
    assert "cannot be loaded (its state file has" in result.stderr
    assert "booting cold" in result.stderr
    assert "the VM did not answer SSH within 3 s" in result.stderr.splitlines()[-1]
    assert not warm.entry().exists()
    assert warm.volume.snapshots() == others  # and none saved by the failed boot
