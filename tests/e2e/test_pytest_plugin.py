"""The pytest plugin, used as a user would: a real pytest run of the example
test file against the fixture image, booted through podman."""

import subprocess
import sys

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    NO_KERNEL,
    ROOT,
    CacheVolume,
    host_state,
    new_cache_volume,
    podman,
)


def test_the_example_tests_pass_against_the_fixture(warm_volume: CacheVolume) -> None:
    """On a cache that holds the fixture's saved VM, as a user's second run."""
    before = host_state()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
         "--bootc-image", FIXTURE, "--bootc-cache-volume", warm_volume.name,
         ROOT / "examples/test_bootc_image.py"],
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout
    # The fixture's teardown stopped the box: nothing of it remains.
    assert podman("ps", "-a", "--filter", "name=bootc-box-pytest", "--format", "{{.Names}}") == ""
    assert warm_volume.nested_containers() == []
    after = host_state()
    assert not any("qemu-system" in p for p in after.processes - before.processes)


def test_an_image_that_cannot_boot_fails_the_session_with_bootc_boxs_words() -> None:
    """The box is kept until its logs are read, then removed."""
    with new_cache_volume() as cache:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
             "--bootc-image", NO_KERNEL, "--bootc-cache-volume", cache.name,
             ROOT / "examples/test_bootc_image.py"],
            capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode != 0
        assert f"bootc-box could not boot {NO_KERNEL}; what it said last:" in result.stdout
        assert f"bootc-box: error: {NO_KERNEL} has no kernel" in result.stdout
        assert (
            podman("ps", "-a", "--filter", "name=bootc-box-pytest", "--format", "{{.Names}}") == ""
        )
