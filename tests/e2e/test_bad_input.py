"""Bad input: one line that names the fix, exit 125, and nothing left behind."""

import socket
import subprocess

import pytest

from tests.e2e.conftest import (
    BAD_UKI,
    FIXTURE,
    NO_KERNEL,
    TWO_KERNELS,
    CacheVolume,
    assert_refused_cleanly,
    box_argv,
    host_state,
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--pull=never", "localhost/no-such-image:latest"],
            "bootc-box: error: image localhost/no-such-image:latest is not in podman's storage "
            "and --pull=never; allow a pull with --pull=missing, share the host's images with "
            "-v /var/lib/containers/storage:",
        ),
        (
            ["localhost/no-such-image:latest"],
            "bootc-box: error: cannot pull localhost/no-such-image:latest: "
            "the registry is not reachable",
        ),
        (
            [NO_KERNEL],
            f"bootc-box: error: {NO_KERNEL} has no kernel: "
            "found no /usr/lib/modules/<kver>/vmlinuz",
        ),
        (
            [TWO_KERNELS],
            f"bootc-box: error: {TWO_KERNELS} has 2 kernels in /usr/lib/modules "
            "(6.1.0-test, 6.12.0-test); a bootc image must ship exactly one",
        ),
        (
            [BAD_UKI],
            "bootc-box: error: the UKI /usr/lib/modules/6.12.0-test/6.12.0-test.efi cannot be "
            "booted: it is not a PE file",
        ),
        (
            # More than the host has: refused before anything starts, not
            # left to the OOM killer once the guest has grown into it.
            ["--memory", "1000G", FIXTURE],
            "bootc-box: error: the VM's 1024000 MiB of memory is more than ",
        ),
        (
            ["--firmware", "uefi-secure", FIXTURE],
            "bootc-box: error: --firmware is for disks: an image boots its own kernel directly,"
            " with no firmware to check its signature; boot a disk of it with --firmware",
        ),
    ],
    ids=[
        "missing-pull-never",
        "missing-unreachable",
        "no-kernel",
        "two-kernels",
        "bad-uki",
        "memory",
        "firmware-on-an-image",
    ],
)
def test_unbootable_image_is_refused_cleanly(
    args: list[str], message: str, cache_volume: CacheVolume
) -> None:
    argv = box_argv("run", *args, "--", "true", volume=cache_volume.name, options=("--rm",))
    assert_refused_cleanly(argv, message, cache_volume)


def test_a_published_port_in_use_is_refused_cleanly(cache_volume: CacheVolume) -> None:
    """QEMU cannot bind the host port: said at once, not after a boot."""
    before = host_state()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            box_argv(
                "run", "--accel", "tcg", "-p", f"127.0.0.1:{port}:80", FIXTURE, "--", "true",
                volume=cache_volume.name, options=("--rm", "--network", "host"),
            ),
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
    assert result.returncode == 125, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"bootc-box: error: host port {port} is already in use; "
        "publish the guest port on another host port (-p HOSTPORT:GUESTPORT)"
    )
    assert cache_volume.nested_containers() == []
    assert cache_volume.leftovers() == []
    after = host_state()
    assert after.processes <= before.processes
    assert after.containers <= before.containers


def test_a_boot_that_outlasts_timeout_fails_cleanly_and_console_shows_it(
    cache_volume: CacheVolume,
) -> None:
    """--timeout 5 is too short for any boot here; --console shows how far
    the guest got, on stderr."""
    before = host_state()
    result = subprocess.run(
        box_argv(
            "run", "--accel", "tcg", "--console", "--timeout", "5", FIXTURE, "--", "true",
            volume=cache_volume.name, options=("--rm",),
        ),
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 125, result.stderr
    assert "Linux version" in result.stderr  # the guest kernel's banner, from --console
    last = result.stderr.splitlines()[-1]
    assert last.startswith("bootc-box: error: the VM did not answer SSH within 5 s")
    assert last.endswith("rerun with --console to see the boot, or raise --timeout")
    assert cache_volume.nested_containers() == []
    assert cache_volume.leftovers() == []
    after = host_state()
    assert after.processes <= before.processes
    assert after.containers <= before.containers
