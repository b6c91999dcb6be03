"""Images from paths: each transport loads the very image that was saved.
(Booting from an archive is covered by test_rootless.py.)"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import FIXTURE, CacheVolume, box_argv, podman


@pytest.mark.parametrize(
    ("transport", "save_format", "name"),
    [
        ("oci-archive", "oci-archive", "fixture.tar"),
        ("oci", "oci-dir", "fixture-layout"),
        ("docker-archive", "docker-archive", "fixture-docker.tar"),
    ],
)
def test_path_transport_loads_the_saved_image(
    transport: str, save_format: str, name: str, cache_volume: CacheVolume, tmp_path: Path
) -> None:
    podman("save", "--format", save_format, "-o", str(tmp_path / name), FIXTURE)
    result = subprocess.run(
        box_argv("pull", f"{transport}:/images/{name}", volume=cache_volume.name,
                 options=("--rm", "-v", f"{tmp_path}:/images:ro")),
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == podman("image", "inspect", "--format", "{{.Id}}", FIXTURE)
    # cache prune --all removes every image of ours that nothing uses.
    prune = subprocess.run(
        box_argv("cache", "prune", "--all", volume=cache_volume.name, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert prune.returncode == 0, prune.stderr
    assert "Removed 0 stale mounts, 1 images, 0 boot file entries, 0 saved states" in prune.stderr
    listing = subprocess.run(
        box_argv("cache", "ls", "--json", volume=cache_volume.name, options=("--rm",)),
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert [i for i in json.loads(listing.stdout)["images"] if i["store"] == "cache"] == []
