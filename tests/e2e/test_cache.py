"""The /cache volume shared by runs: prune clears what a killed run left,
never a live run's mount; ls shows where each image lives."""

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    Boot,
    CacheVolume,
    box_argv,
    podman,
    read_until,
    seeded_cache_volume,
    wait_for_log,
)


@pytest.fixture
def names() -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def start(names: list[str], cache: CacheVolume, *command: str) -> str:
    """A detached run, once it holds its mount (it says so when it starts
    restoring the saved state)."""
    name = f"bootc-box-test-{time.monotonic_ns()}"
    names.append(name)
    argv = box_argv("run", FIXTURE, "--", *command, volume=cache.name,
                    options=("-d", "--name", name))  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    wait_for_log(name, "bootc-box: Restoring", time.monotonic() + BOOT_DEADLINE)
    return name


def test_prune_clears_a_killed_run_and_spares_a_live_one(
    names: list[str], first_boot: Boot
) -> None:
    # The runs restore the session's saved state: the live one stays live
    # (it holds its mount) until it reads the line this test writes after
    # the prune, not for as long as a cold boot happens to take.
    with seeded_cache_volume(first_boot) as cache_volume:
        live = f"bootc-box-test-{time.monotonic_ns()}"
        names.append(live)
        command = "read -r line && cat /usr/share/bootc-box-fixture-marker"
        live_argv = box_argv("run", FIXTURE, "--", "sh", "-c", command,
                             volume=cache_volume.name, options=("-i", "--name", live))  # fmt: skip
        with subprocess.Popen(live_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as live_run:  # fmt: skip
            assert live_run.stderr is not None
            deadline = time.monotonic() + BOOT_DEADLINE
            said = read_until(live_run.stderr.fileno(), b"bootc-box: Restoring", deadline)
            killed = start(names, cache_volume, "true")
            podman("kill", "--signal", "KILL", killed)
            podman("wait", killed)
            assert len(cache_volume.nested_containers()) == 2  # the live mount and the dead one

            prune = subprocess.run(
                box_argv("cache", "prune", volume=cache_volume.name, options=("--rm",)),
                capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            assert prune.returncode == 0, prune.stderr
            assert "Removed 1 stale mounts, 0 images, 0 boot file entries, 0 saved states" in (
                prune.stderr
            )
            assert len(cache_volume.nested_containers()) == 1
            assert live_run.poll() is None  # still live through the prune

            out, err = live_run.communicate("go\n", timeout=BOOT_DEADLINE)
        assert live_run.returncode == 0, said.decode() + err
        assert out.splitlines()[-1] == "bootc-box fixture"
        assert cache_volume.nested_containers() == []
        assert cache_volume.leftovers() == []


def test_ls_shows_the_hosts_images_as_shared(cache_volume: CacheVolume) -> None:
    result = subprocess.run(
        box_argv("cache", "ls", "--json", volume=cache_volume.name, options=("--rm",)),
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    images = json.loads(result.stdout)["images"]
    fixture = next(i for i in images if FIXTURE in i["names"])
    assert fixture["store"] == "host"
    assert fixture["size"] > 100_000_000


def test_damaged_boot_files_are_extracted_again(cache_volume: CacheVolume) -> None:
    """Boot files are extracted once per image, checked on every use, and
    rebuilt when damaged. `--timeout 1` ends each run one second into the
    boot, on any machine: QEMU has read the files by then."""

    def run() -> str:
        result = subprocess.run(
            box_argv("run", "--accel", "tcg", "--timeout", "1", FIXTURE, "--", "true",
                     volume=cache_volume.name, options=("--rm",)),
            capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
        )  # fmt: skip
        assert result.returncode == 125, result.stderr
        assert "bootc-box: error: the VM did not answer SSH within 1 s" in result.stderr
        return result.stderr

    assert f"Extracting the boot files of {FIXTURE}" in run()
    entries = [p for p in (cache_volume.path / "boot").iterdir() if p.is_dir()]
    assert len(entries) == 1
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    assert (
        manifest["image"]
        == entries[0].name
        == podman("image", "inspect", "--format", "{{.Id}}", FIXTURE)
    )

    assert "Extracting" not in run()

    initramfs = entries[0] / "initramfs.img"
    with initramfs.open("r+b") as f:
        f.seek(4096)
        f.write(b"bit rot")
    damaged = run()
    assert (
        f"bootc-box: warning: The cached boot files of {FIXTURE} are damaged "
        "(initramfs.img does not match its recorded digest); extracting them again"
    ) in damaged
    assert (
        "sha256:" + hashlib.sha256(initramfs.read_bytes()).hexdigest()
        == (manifest["files"]["initramfs.img"])
    )
    assert cache_volume.nested_containers() == []
