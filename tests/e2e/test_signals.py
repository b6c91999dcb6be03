"""`podman stop` (SIGTERM) at any point powers the VM off and cleans up
before podman's stop timeout, leaving nothing in the /cache volume."""

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    CacheVolume,
    box_argv,
    host_state,
    podman,
    wait_for_log,
)


@pytest.fixture
def container() -> Iterator[str]:
    name = f"bootc-box-test-{time.monotonic_ns()}"
    yield name
    subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def stop_when(container: str, cache: CacheVolume, log_text: str, command: str) -> int:
    """Start a run detached, `podman stop` it once `log_text` is logged; its exit code."""
    argv = box_argv("run", FIXTURE, "--", "sh", "-c", command, volume=cache.name,
                    options=("-d", "--name", container))  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    wait_for_log(container, log_text, time.monotonic() + BOOT_DEADLINE)
    podman("stop", "--time", "60", container)
    return int(podman("inspect", "--format", "{{.State.ExitCode}}", container))


@pytest.mark.parametrize(
    ("moment", "log_text", "volume"),
    [
        ("during boot", "bootc-box: Booting", "cache_volume"),
        # Restored: the command is the subject, not the boot.
        ("during the command", "command-started", "warm_volume"),
    ],
)
def test_podman_stop_powers_off_and_cleans_up(
    moment: str, log_text: str, volume: str, container: str, request: pytest.FixtureRequest
) -> None:
    cache_volume: CacheVolume = request.getfixturevalue(volume)
    before = host_state()
    status = stop_when(container, cache_volume, log_text, "echo command-started; exec sleep 600")
    # 143 is our own clean exit on SIGTERM; 137 would mean podman had to kill us.
    assert status == 143, f"{moment}: exit {status}"
    logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True, check=True)
    assert "bootc-box: terminated" in logs.stderr
    assert cache_volume.nested_containers() == []
    assert cache_volume.leftovers() == []
    assert host_state().processes <= before.processes


def test_podman_stop_with_its_default_timeout_leaves_nothing(
    container: str, warm_volume: CacheVolume
) -> None:
    """`podman stop` as most people type it: 10 s, then SIGKILL. The guest
    gets its power button and --stop-timeout (8 s) to shut down, then QEMU
    is stopped if it has not, and the clean-up fits in what is left."""
    argv = box_argv("run", FIXTURE, volume=warm_volume.name,
                    options=("-d", "--name", container))  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    wait_for_log(container, "is running; stop it with", time.monotonic() + BOOT_DEADLINE)
    before = host_state()
    began = time.monotonic()
    podman("stop", container)
    took = time.monotonic() - began
    status = int(podman("inspect", "--format", "{{.State.ExitCode}}", container))
    assert status == 143, f"podman had to kill the box after {took:.1f} s (exit {status})"
    assert warm_volume.nested_containers() == []
    assert warm_volume.leftovers() == []
    assert host_state().processes <= before.processes
