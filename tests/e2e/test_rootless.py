"""Rootless outer podman: a user with subuids runs the box with nothing but
--device /dev/kvm, and it boots with the guest's ownership intact."""

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BOOT_DEADLINE, BOX, FIXTURE, ROOT, podman

USER = "bootc-box-rootless"
# Readable by the test user, unlike pytest's root-only temporary directories.
SHARED = Path("/var/tmp/bootc-box-rootless")

Podman = Callable[..., "subprocess.CompletedProcess[str]"]


def as_user(*args: str, timeout: float = BOOT_DEADLINE) -> "subprocess.CompletedProcess[str]":
    uid = subprocess.run(["id", "-u", USER], capture_output=True, text=True, check=True)
    env = [f"XDG_RUNTIME_DIR=/run/user/{uid.stdout.strip()}", f"HOME=/home/{USER}"]
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", *env, "podman", *args],
        capture_output=True, text=True, check=False, timeout=timeout, cwd="/",
    )  # fmt: skip


def image_id(run: Callable[..., "subprocess.CompletedProcess[str]"], image: str) -> str:
    return run("image", "inspect", "--format", "{{.Id}}", image, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def rootless() -> Iterator[Podman]:
    """The test user, with the current box image in its own store."""
    subprocess.run([ROOT / "ci/prepare-rootless", USER], check=True)
    SHARED.mkdir(mode=0o755, exist_ok=True)
    box_id = podman("image", "inspect", "--format", "{{.Id}}", BOX)
    if image_id(as_user, BOX) != box_id:
        podman("save", "--format", "oci-archive", "-o", str(SHARED / "box.tar"), BOX)
        (SHARED / "box.tar").chmod(0o644)
        loaded = as_user("load", "--quiet", "--input", str(SHARED / "box.tar"), timeout=600)
        assert loaded.returncode == 0, loaded.stderr
        (SHARED / "box.tar").unlink()
    fixture = SHARED / "fixture.tar"
    fixture.unlink(missing_ok=True)
    podman("save", "--format", "oci-archive", "-o", str(fixture), FIXTURE)
    fixture.chmod(0o644)
    yield as_user
    fixture.unlink()


def box(run: Podman, *args: str) -> "subprocess.CompletedProcess[str]":
    # An anonymous volume at /cache: a real volume, removed with --rm.
    return run("run", "--rm", "--device", "/dev/kvm", "-v", "/cache",
               "-v", f"{SHARED}/fixture.tar:/fixture.tar:ro", BOX, *args)  # fmt: skip


def test_rootless_podman_boots_the_fixture(rootless: Podman) -> None:
    result = box(rootless, "--debug", "run", "oci-archive:/fixture.tar", "--",
                 "stat", "-c", "%U:%G", "/var/log/journal")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Ids inside the guest are the image's own, not shifted by the subuids.
    assert result.stdout.strip() == "root:systemd-journal"
    # A rootless box forbids virtiofsd's namespace sandbox; the chroot one works.
    assert "virtiofsd cannot enter its namespace sandbox here" in result.stderr
    assert "without a sandbox" not in result.stderr


def test_doctor_sees_rootless_podman(rootless: Podman) -> None:
    result = box(rootless, "doctor", "--json")
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["outer podman"]["detail"].startswith("rootless")
    assert checks["privileges"]["ok"]
