"""The disconnected-site recipe (README, "Disconnected sites"), against the
local TLS registry standing in for the site's mirror: skopeo copies the box
image and a bootc image under their public names, the drop-in it prints
sends those names to the mirror, host podman pulls the box from it, and the
box boots the bootc image from it. Nothing is fetched from the public
registries: they cannot be reached from here at all."""

import subprocess
from pathlib import Path

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    BOX,
    FIXTURE,
    Boot,
    Registry,
    podman,
    seeded_cache_volume,
)

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_BOX = "ghcr.io/bootc-box/bootc-box:mirror-test"
PUBLIC_IMAGE = "quay.io/bootc-box-example/fixture:mirror-test"
MARKER = "/usr/share/bootc-box-fixture-marker"


def untag(*names: str) -> None:
    """Drop our public-looking names; the images keep their local ones."""
    for name in names:
        subprocess.run(["podman", "untag", name, name], capture_output=True, check=False)


def test_mirrored_box_boots_a_mirrored_image(
    registry: Registry, first_boot: Boot, tmp_path: Path
) -> None:
    for local, public in ((BOX, PUBLIC_BOX), (FIXTURE, PUBLIC_IMAGE)):
        podman("tag", local, public)
    try:
        mirrored = subprocess.run(
            [ROOT / "deploy/mirror/mirror-images", registry.address,
             f"containers-storage:{PUBLIC_BOX}", f"containers-storage:{PUBLIC_IMAGE}"],
            env={"PATH": "/usr/bin:/bin", "MIRROR_CERT_DIR": str(registry.ca_dir)},
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert mirrored.returncode == 0, mirrored.stderr
    finally:
        untag(PUBLIC_BOX, PUBLIC_IMAGE)
    dropin = tmp_path / "50-mirror.conf"
    dropin.write_text(mirrored.stdout)
    assert 'prefix = "ghcr.io/bootc-box/bootc-box"' in mirrored.stdout

    # The site's host: its registries.conf holds the drop-in.
    conf = tmp_path / "registries.conf"
    conf.write_text(mirrored.stdout)
    pulled = subprocess.run(
        ["podman", "pull", "--cert-dir", str(registry.ca_dir), PUBLIC_BOX],
        env={"PATH": "/usr/bin:/bin", "CONTAINERS_REGISTRIES_CONF": str(conf)},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    try:
        assert pulled.returncode == 0, pulled.stderr
        assert podman("image", "inspect", "--format", "{{.Id}}", PUBLIC_BOX) == podman(
            "image", "inspect", "--format", "{{.Id}}", BOX
        )
        # The image is the fixture under another name: the session's saved
        # state serves it (this test is about the mirror, not the boot).
        with seeded_cache_volume(first_boot) as cache:
            booted = subprocess.run(
                ["podman", "run", "--rm", "--device", "/dev/kvm", "-v", f"{cache.name}:/cache",
                 # This mirror listens on the host's loopback; a site's has a name.
                 "--network", "host",
                 "-v", f"{dropin}:/etc/containers/registries.conf.d/50-mirror.conf:ro",
                 # certs.d names directories HOST:PORT, a colon -v cannot take.
                 "--mount", f"type=bind,src={registry.ca_dir},"
                            f"dst=/etc/containers/certs.d/{registry.address},readonly",
                 PUBLIC_BOX, "run", PUBLIC_IMAGE, "--", "cat", MARKER],
                capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
            )  # fmt: skip
        assert booted.returncode == 0, booted.stderr
        assert booted.stdout.strip() == "bootc-box fixture"
        assert f"bootc-box: Pulling {PUBLIC_IMAGE}" in booted.stderr
    finally:
        untag(PUBLIC_BOX)
