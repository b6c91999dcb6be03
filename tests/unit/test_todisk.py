from pathlib import Path, PurePosixPath

import pytest

from bootc_box.binds import bind_owner
from bootc_box.errors import BootcBoxError
from bootc_box.images import ImageRef
from bootc_box.todisk import (
    GUEST_INSTALL,
    MIN_DISK_SIZE,
    InstallSpec,
    check_installable,
    check_output,
    create_disk,
    default_disk_size,
    install_argv,
    partial_output,
    source_name,
    store_binds,
)


def test_an_existing_output_is_refused_unless_forced(tmp_path: Path) -> None:
    output = tmp_path / "disk.raw"
    check_output(output, force=False)
    output.touch()
    with pytest.raises(BootcBoxError, match="already exists") as err:
        check_output(output, force=False)
    assert err.value.hint == "remove it, or pass --force to replace it"
    check_output(output, force=True)


def test_an_output_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match="is not a directory") as err:
        check_output(tmp_path / "nope" / "disk.raw", force=False)
    assert "mount a host directory there" in (err.value.hint or "")
    with pytest.raises(BootcBoxError, match="is a directory"):
        check_output(tmp_path, force=True)


def test_the_default_size_is_twice_the_image_but_at_least_10_gib() -> None:
    assert default_disk_size(300 << 20) == MIN_DISK_SIZE == 10 << 30
    assert default_disk_size(8 << 30) == 16 << 30


def test_the_installer_runs_bootc_from_the_image_against_the_output_disk() -> None:
    spec = InstallSpec("localhost/img", filesystem="xfs", root_size="5G", kargs=("quiet", "a=b c"))
    image_id = "b" * 64
    argv = install_argv(spec, image_id, "localhost/img")
    # By ID: the only image in the store the VM is given; updates follow the name.
    assert argv[:5] == ("sh", "-c", GUEST_INSTALL, "sh", image_id)
    assert argv[5:] == (
        "--generic-image", "--skip-fetch-check",
        "--source-imgref", f"containers-storage:{image_id}",
        "--filesystem", "xfs", "--target-imgref", "localhost/img", "--root-size", "5G",
        "--karg", "quiet", "--karg", "a=b c",
        "/dev/disk/by-id/virtio-output",
    )  # fmt: skip
    assert "bootc install to-disk" in GUEST_INSTALL


def test_an_image_by_id_has_no_registry_to_update_from() -> None:
    image_id = "a" * 64
    argv = install_argv(InstallSpec(image_id), image_id, image_id)
    assert "--target-imgref" not in argv
    assert f"containers-storage:{image_id}" in argv


def test_an_archive_is_installed_by_image_id_a_name_by_name() -> None:
    assert source_name(ImageRef("/a/img.tar", "oci-archive"), "abc123") == "abc123"
    assert source_name(ImageRef("quay.io/x/y:1"), "abc123") == "quay.io/x/y:1"


def test_the_installer_gets_one_store_read_only_with_its_own_ids() -> None:
    [bind] = store_binds(Path("/cache/disks/.k.partial-x/graph"))
    assert (bind.source, bind.target, bind.readonly) == (
        Path("/cache/disks/.k.partial-x/graph"), PurePosixPath("/run/bootc-box/stores/0"), True
    )  # fmt: skip
    # Ids are not squashed to the store's owner: the layers' files keep theirs.
    assert bind_owner(bind) is None


def test_an_image_without_bootc_is_refused_before_any_vm(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/podman").touch()
    with pytest.raises(BootcBoxError, match="img has no /usr/bin/bootc"):
        check_installable(tmp_path, "img")
    # As in bootc images, /bin may be a link and bootc may be one too.
    (tmp_path / "usr/libexec").mkdir()
    (tmp_path / "usr/libexec/bootc").touch()
    (tmp_path / "usr/bin/bootc").symlink_to("/usr/libexec/bootc")
    check_installable(tmp_path, "img")


def test_a_partial_output_leaves_nothing_unless_renamed(tmp_path: Path) -> None:
    output = tmp_path / "disk.raw"

    def interrupted() -> None:
        with partial_output(output) as partial:
            create_disk(partial, "raw", 1 << 30)
            assert partial.stat().st_size == 1 << 30
            assert partial.stat().st_blocks == 0  # sparse
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted()
    assert list(tmp_path.iterdir()) == []
    with partial_output(output) as partial:
        create_disk(partial, "qcow2", 1 << 30)
        partial.rename(output)
    assert output.read_bytes()[:4] == b"QFI\xfb"
    assert list(tmp_path.iterdir()) == [output]
