"""Pulling from a real registry (Debian's docker-registry on loopback, TLS
with a self-signed certificate): verification on by default, the explicit
ways around it, a registries.conf mirror, and a warm /cache."""

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    AuthRegistry,
    Boot,
    CacheVolume,
    Registry,
    box_argv,
    seeded_cache_volume,
)

# The box reaches the loopback registry through the host's network.
HOST_NETWORK = ("--rm", "--network", "host")
OUTSIDE_NAME = "quay.io/bootc-box/fixture:latest"


def box(
    *args: str, volume: str, options: tuple[str, ...] = ()
) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        box_argv(*args, volume=volume, options=(*HOST_NETWORK, *options)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip


def nested_images(cache: CacheVolume) -> str:
    listing = cache.path / "storage/overlay-images/images.json"
    return listing.read_text() if listing.exists() else "[]"


def test_pull_verifies_tls_by_default(registry: Registry, cache_volume: CacheVolume) -> None:
    result = box("pull", registry.fixture, volume=cache_volume.name)
    assert result.returncode == 125
    assert result.stderr.strip().splitlines()[-1] == (
        f"bootc-box: error: cannot pull {registry.fixture}: the registry's TLS certificate is "
        "not trusted (x509: certificate signed by unknown authority); pass the registry's CA "
        "with --cert-dir DIR (DIR/ca.crt), or --tls-verify=false"
    )
    assert nested_images(cache_volume) in ("[]", "")


def test_pull_with_the_registrys_ca(registry: Registry, cache_volume: CacheVolume) -> None:
    result = box("pull", "--cert-dir", "/certs", registry.fixture, volume=cache_volume.name,
                 options=("-v", f"{registry.ca_dir}:/certs:ro"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{64}", result.stdout.strip())
    assert result.stdout.strip() in nested_images(cache_volume)


def test_pull_without_verification_when_asked(
    registry: Registry, cache_volume: CacheVolume
) -> None:
    result = box("pull", "--tls-verify=false", registry.fixture, volume=cache_volume.name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in nested_images(cache_volume)


def test_pull_from_a_registry_that_wants_a_login(
    auth_registry: AuthRegistry, cache_volume: CacheVolume
) -> None:
    """The credentials travel as a file (--authfile or REGISTRY_AUTH_FILE),
    never on a command line."""
    image = auth_registry.registry.fixture
    trust = ("-v", f"{auth_registry.registry.ca_dir}:/certs:ro")
    anonymous = box("pull", "--cert-dir", "/certs", image, volume=cache_volume.name, options=trust)
    assert anonymous.returncode == 125
    assert f"cannot pull {image}: the registry wants credentials" in anonymous.stderr
    assert "pass --authfile FILE (or set REGISTRY_AUTH_FILE)" in anonymous.stderr

    auth = (*trust, "-v", f"{auth_registry.authfile}:/auth/auth.json:ro")
    with_flag = box("pull", "--cert-dir", "/certs", "--authfile", "/auth/auth.json", image,
                    volume=cache_volume.name, options=auth)  # fmt: skip
    assert with_flag.returncode == 0, with_flag.stderr
    assert with_flag.stdout.strip() in nested_images(cache_volume)

    with_env = box("pull", "--cert-dir", "/certs", image, volume=cache_volume.name,
                   options=(*auth, "-e", "REGISTRY_AUTH_FILE=/auth/auth.json"))  # fmt: skip
    assert with_env.returncode == 0, with_env.stderr
    assert with_env.stdout == with_flag.stdout


def test_mirror_serves_an_outside_name_and_a_warm_cache_pulls_nothing(
    registry: Registry, first_boot: Boot, tmp_path: Path
) -> None:
    """A disconnected site: registries.conf mirrors quay.io to the local
    registry, whose CA is in certs.d. The first run pulls through the mirror
    and boots; then two runs at once on the same /cache both boot, pulling
    and extracting nothing. One of them asks for --pull=newer without the
    mirror, so its pull fails and it boots the copy it has."""
    (tmp_path / "mirror.conf").write_text(
        '[[registry]]\nprefix = "quay.io/bootc-box"\nlocation = "quay.io/bootc-box"\n'
        f'[[registry.mirror]]\nlocation = "{registry.address}/bootc"\n'
    )
    site = (
        "-v", f"{tmp_path / 'mirror.conf'}:/etc/containers/registries.conf.d/50-mirror.conf:ro",
        # certs.d names directories HOST:PORT, a colon -v cannot take.
        "--mount", f"type=bind,src={registry.ca_dir},"
                   f"dst=/etc/containers/certs.d/{registry.address},readonly",
    )  # fmt: skip
    command = ("--", "cat", "/usr/share/bootc-box-fixture-marker")
    # The image is the fixture under another name: the session's saved state
    # serves its runs (this test is about pulling, not booting).
    with seeded_cache_volume(first_boot) as cache:
        first = box("run", OUTSIDE_NAME, *command, volume=cache.name, options=site)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "bootc-box fixture"
        assert f"bootc-box: Pulling {OUTSIDE_NAME}" in first.stderr
        assert f"bootc-box: Extracting the boot files of {OUTSIDE_NAME}" in first.stderr

        with ThreadPoolExecutor(2) as pool:
            mirrored = pool.submit(
                box, "run", OUTSIDE_NAME, *command, volume=cache.name, options=site
            )
            newer = pool.submit(
                box, "run", "--pull=newer", OUTSIDE_NAME, *command, volume=cache.name
            )
        for result in (mirrored.result(), newer.result()):
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "bootc-box fixture"
            assert "Extracting" not in result.stderr
        assert "Pulling" not in mirrored.result().stderr
        assert f"cannot pull {OUTSIDE_NAME}" in newer.result().stderr
        assert "; using the local copy" in newer.result().stderr
        assert cache.nested_containers() == []
