"""Native mode without root: bootc-box installed with pip by an ordinary user
on a host that has podman, QEMU and virtiofsd, booting an image from that
user's own rootless podman store.

This machine's own host (Debian 12) has QEMU 7.2 and only QEMU's old C
virtiofsd, which bootc-box cannot drive, so the host here is a container of
the box image (Debian 13: podman, QEMU 10, virtiofsd 1.13) used as a plain
machine: its entrypoint is skipped, and nothing of the box's own set-up
runs. Two things make it a host: a user is created in it, and, because a
container has no CAP_SYS_ADMIN, its setuid-root newuidmap/newgidmap cannot
map the user's subordinate ids (the kernel wants CAP_SYS_ADMIN from a mapper
that does not own the namespace), so they get file capabilities instead, as
podman's own podman-in-podman image does. Everything bootc-box does (podman
unshare, the mount, virtiofsd, QEMU, SSH, state under the XDG directories)
is real and runs as that user."""

import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import BOOT_DEADLINE, BOX, FIXTURE, ROOT, podman

USER, UID = "tester", 1000
HOME = f"/home/{USER}"
MARKER = "/usr/share/bootc-box-fixture-marker"
# security.capability (VFS_CAP_REVISION_2, effective): one permitted capability.
CAP_SETGID, CAP_SETUID = 6, 7


def file_capability(bit: int) -> bytes:
    return struct.pack("<IIIII", 0x02000001, 1 << bit, 0, 0, 0)


@dataclass(frozen=True)
class Host:
    container: str

    def as_user(
        self, *argv: str, timeout: float = BOOT_DEADLINE
    ) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            ["podman", "exec", "-u", USER, "-w", HOME, "-e", f"HOME={HOME}",
             "-e", "PODMAN_IGNORE_CGROUPSV1_WARNING=1", self.container, *argv],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip

    def bootc_box(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return self.as_user(f"{HOME}/.local/bin/bootc-box", *args)

    def as_root(self, *argv: str) -> str:
        return podman("exec", self.container, *argv)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    shared = tmp_path_factory.mktemp("native")
    shared.chmod(0o755)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(shared), ROOT],
        check=True,
    )  # fmt: skip
    (wheel,) = shared.glob("bootc_box-*.whl")
    podman("save", "--format", "oci-archive", "-o", str(shared / "fixture.tar"), FIXTURE)
    for path in shared.iterdir():
        path.chmod(0o644)
    name = f"bootc-box-test-native-{time.monotonic_ns()}"
    # The user's home on a volume: rootless podman's overlay store cannot
    # sit on the container's own overlay root.
    podman("run", "-d", "--name", name, "--device", "/dev/kvm", "--entrypoint", "sleep",
           "--mount", f"type=volume,dst={HOME}", "-v", f"{shared}:/shared:ro",
           BOX, "infinity")  # fmt: skip
    host = Host(name)
    try:
        host.as_root("useradd", "--no-create-home", "--uid", str(UID), USER)
        host.as_root("chown", f"{USER}:{USER}", HOME)
        host.as_root("python3", "-c", (
            "import os, sys\n"
            "for prog, cap in (('/usr/bin/newuidmap', sys.argv[1]), "
            "('/usr/bin/newgidmap', sys.argv[2])):\n"
            "    os.chmod(prog, 0o755)\n"
            "    os.setxattr(prog, 'security.capability', bytes.fromhex(cap))\n"
        ), file_capability(CAP_SETUID).hex(), file_capability(CAP_SETGID).hex())  # fmt: skip
        installed = host.as_user("pip", "install", "--quiet", "--user", "--break-system-packages",
                                 "--no-deps", "--no-index", f"/shared/{wheel.name}")  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        loaded = host.as_user("podman", "load", "--quiet", "--input", "/shared/fixture.tar")
        assert loaded.returncode == 0, loaded.stderr
        yield host
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "0", "--volumes", name],
                       check=False, capture_output=True)  # fmt: skip


def test_the_pip_installed_package_is_what_runs(host: Host) -> None:
    where = host.as_user("python3", "-c", "import bootc_box; print(bootc_box.__file__)")
    assert where.stdout.startswith(f"{HOME}/.local/lib/"), where.stdout


def test_doctor_finds_everything_a_boot_needs(host: Host) -> None:
    result = host.bootc_box("doctor", "--json")
    assert result.returncode == 0, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["virtiofsd"]["detail"] == "/usr/libexec/virtiofsd"
    assert checks["privileges"]["detail"] == "default capabilities: mounts in a user namespace"


def test_an_ordinary_user_boots_an_image_from_their_own_store(host: Host) -> None:
    """--warm always: the state this boot saves serves the next test's VM."""
    result = host.bootc_box("run", "--warm", "always", FIXTURE, "--", "sh", "-c",
                            f"cat {MARKER}; stat -c %U:%G /var/log/journal")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Ids in the guest are the image's own, not the user's subordinate ids.
    assert result.stdout == "bootc-box fixture\nroot:systemd-journal\n"
    assert "VM up in" in result.stderr
    # State under the user's XDG cache directory; nothing left elsewhere.
    cache = host.as_user("find", f"{HOME}/.cache/bootc-box", "-mindepth", "3", "-maxdepth", "3",
                         "-type", "f", "-name", "manifest.json").stdout.split()  # fmt: skip
    assert sorted(Path(p).parent.parent.name for p in cache) == ["boot", "snapshots"]
    assert host.as_user("podman", "ps", "--all", "--quiet").stdout == ""
    assert host.as_user("ls", "-A", f"/tmp/bootc-box-{UID}/vms").stdout == ""


def test_a_detached_vm_is_managed_from_outside_podmans_namespace(host: Host) -> None:
    """run -d re-runs itself in rootless podman's user namespace; list, ssh,
    stop and rm do not, and must find and stop what it started."""
    started = host.bootc_box("run", "-d", "--name", "web", FIXTURE)
    assert started.returncode == 0, started.stderr
    try:
        answered = host.bootc_box("ssh", "web", "--", "cat", MARKER)
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout == "bootc-box fixture\n"
        # From the state the test before saved, in the user's namespace.
        assert "Restoring" in host.bootc_box("logs", "web").stdout
        (vm,) = json.loads(host.bootc_box("list", "--json").stdout)
        assert (vm["name"], vm["state"]) == ("web", "running")
        assert host.bootc_box("stop", "web").returncode == 0
        (vm,) = json.loads(host.bootc_box("list", "--json").stdout)
        assert vm["state"] == "stopped"
    finally:
        host.bootc_box("rm", "--force", "web")
    assert host.bootc_box("list", "--json").stdout.strip() == "[]"
    assert host.as_user("podman", "ps", "--all", "--quiet").stdout == ""
    helpers = host.as_root("sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null; true")
    assert "qemu-system-x86" not in helpers
    assert "virtiofsd" not in helpers


def test_images_lists_the_users_bootable_images(host: Host) -> None:
    result = host.bootc_box("images", "--json")
    assert result.returncode == 0, result.stderr
    assert [image["names"] for image in json.loads(result.stdout)] == [[FIXTURE]]
