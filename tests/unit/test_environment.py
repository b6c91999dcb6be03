import os
from pathlib import Path

import pytest

from bootc_box.environment import (
    Environment,
    effective_capabilities,
    is_mount_point,
    outer_podman_is_rootless,
    private_tmp_dir,
    probe_checks,
)
from bootc_box.errors import BootcBoxError

STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n"


def test_effective_capabilities_are_read_from_status() -> None:
    caps = effective_capabilities(STATUS)
    assert caps == 0xA80425FB
    assert not caps >> 21 & 1  # podman's default set has no CAP_SYS_ADMIN


def test_rootful_outer_podman_hands_over_the_whole_id_range() -> None:
    assert not outer_podman_is_rootless("         0          0 4294967295\n")
    assert outer_podman_is_rootless(
        "         0       1001          1\n         1     100000      65536\n"
    )


def test_mount_point_from_mountinfo() -> None:
    mountinfo = (
        "1 0 0:1 / / rw - overlay overlay rw\n"
        "2 1 254:0 /volumes/bootc-box/_data /cache rw,relatime - ext4 /dev/vda rw\n"
    )
    assert is_mount_point(Path("/cache"), mountinfo)
    assert not is_mount_point(Path("/cache"), mountinfo.splitlines()[0])


def test_box_checks_name_the_podman_flag_for_what_is_missing() -> None:
    checks = {c.name: c for c in probe_checks(Environment(in_box=True), virtiofsd=None)}
    assert checks["virtiofsd"].ok is False
    assert checks["virtiofsd"].fix == "install the virtiofsd package"
    assert checks["virtiofsd"].required
    # This test runs outside a box: neither a /cache volume nor a shared store.
    assert checks["/cache volume"].fix == "add -v bootc-box:/cache"
    assert checks["host images"].fix.startswith("add -v /var/lib/containers/storage:")
    assert not checks["/cache volume"].required


def test_native_checks_have_no_box_only_entries() -> None:
    names = {c.name for c in probe_checks(Environment(in_box=False), Path("/v"))}
    assert "/cache volume" not in names
    assert {"kvm", "privileges", "outer podman", "podman", "qemu-system-x86_64"} <= names


def test_the_tmp_fallback_is_made_private(tmp_path: Path) -> None:
    made = private_tmp_dir(tmp_path, os.getuid())
    assert made == tmp_path / f"bootc-box-{os.getuid()}"
    assert made.stat().st_mode & 0o777 == 0o700
    assert private_tmp_dir(tmp_path, os.getuid()) == made  # and reused


@pytest.mark.parametrize("planted", ["open to all", "a symlink", "another user's"])
def test_a_planted_tmp_fallback_is_refused(tmp_path: Path, planted: str) -> None:
    uid = os.getuid()
    path = tmp_path / f"bootc-box-{uid}"
    if planted == "a symlink":
        (tmp_path / "theirs").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "theirs")
    else:
        path.mkdir()
        path.chmod(0o777 if planted == "open to all" else 0o700)
        if planted == "another user's":
            if os.getuid() != 0:
                pytest.skip("only root can make a directory another user's")
            os.chown(path, 4321, 4321)
    with pytest.raises(BootcBoxError, match="is not a private directory of this user"):
        private_tmp_dir(tmp_path, uid)
