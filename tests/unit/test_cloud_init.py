import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bootc_box.boot import Disk
from bootc_box.cloud_init import (
    SEED_MAX,
    CloudInit,
    keep_host_keys_unit,
    make_seed,
    parse_cloud_init,
    seed_argv,
)
from bootc_box.errors import BootcBoxError
from bootc_box.provision import Provision, provision_from_json, provision_json
from bootc_box.qemu import _disk_args

USER_DATA = b"#cloud-config\nruncmd: [[touch, /run/x]]\n"


def test_a_user_data_file_is_seeded_with_meta_data_naming_an_instance_of_that_seed(
    tmp_path: Path,
) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    seed = parse_cloud_init(Path("user-data"), tmp_path)
    files = dict(seed.files)
    assert list(files) == ["user-data", "meta-data"]
    assert files["user-data"] == USER_DATA
    assert files["meta-data"].startswith(b"instance-id: iid-bootc-box-")
    # The same seed, the same instance (a kept VM's cloud-init runs once);
    # another seed, another instance.
    assert parse_cloud_init(tmp_path / "user-data", Path("/")) == seed
    (tmp_path / "user-data").write_bytes(USER_DATA + b"# changed\n")
    assert (
        dict(parse_cloud_init(tmp_path / "user-data", tmp_path).files)["meta-data"]
        != files["meta-data"]
    )
    assert "cloud-config" not in repr(seed)  # may hold secrets


def test_a_seed_always_has_both_files_nocloud_needs(tmp_path: Path) -> None:
    (tmp_path / "meta-data").write_bytes(b"instance-id: mine\n")
    (tmp_path / "user-data").write_bytes(b"")
    assert dict(parse_cloud_init(tmp_path, Path("/")).files) == {
        "user-data": b"",
        "meta-data": b"instance-id: mine\n",
    }
    (tmp_path / "user-data").unlink()
    assert dict(parse_cloud_init(tmp_path, Path("/")).files)["user-data"] == b""


def test_a_nocloud_directory_keeps_its_own_meta_data(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    (tmp_path / "meta-data").write_bytes(b"instance-id: mine\n")
    (tmp_path / "network-config").write_bytes(b"version: 2\n")
    files = dict(parse_cloud_init(tmp_path, Path("/")).files)
    assert files == {
        "user-data": USER_DATA,
        "meta-data": b"instance-id: mine\n",
        "network-config": b"version: 2\n",
    }


@pytest.mark.parametrize(
    ("files", "path", "message"),
    [
        ({}, "missing", "--cloud-init: cannot read {d}/missing: No such file or directory"),
        ({"user-data": b"runcmd: [ls]\n"}, "user-data",
         "--cloud-init: {d}/user-data: user-data is not in a format cloud-init runs"),
        ({"user-data": b"\x1f\x8b\x08gzip"}, "user-data", "is not in a format cloud-init runs"),
        ({"user-data": USER_DATA, "meta-data": b"\xff\n"}, ".",
         "--cloud-init: {d}: meta-data is not UTF-8 text"),
        ({"user-data": USER_DATA, "notes.txt": b""}, ".",
         "--cloud-init: {d} has notes.txt, which is not a NoCloud file"),
        ({"network-config": b"version: 2\n"}, ".",
         "--cloud-init: {d} has neither user-data nor meta-data"),
        ({"user-data": b"#!/bin/sh\n" + b"x" * SEED_MAX}, "user-data", "more than 4 MiB"),
    ],
    ids=["missing", "not-user-data", "gzip", "not-utf8", "stray-file", "no-seed", "too-large"],
)  # fmt: skip
def test_a_bad_seed_is_refused_naming_the_fix(
    tmp_path: Path, files: dict[str, bytes], path: str, message: str
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(BootcBoxError) as e:
        parse_cloud_init(Path(path), tmp_path)
    assert message.format(d=tmp_path) in str(e.value)
    assert e.value.hint


def test_a_seed_file_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    """A workflow's checkout could link user-data to a host file."""
    (tmp_path / "secret").write_bytes(b"#cloud-config\n")
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed/user-data").symlink_to(tmp_path / "secret")
    with pytest.raises(BootcBoxError, match=r"cannot read .*/seed/user-data"):
        parse_cloud_init(tmp_path / "seed", Path("/"))
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo/user-data")
    with pytest.raises(BootcBoxError, match="is not a regular file"):
        parse_cloud_init(tmp_path / "fifo", Path("/"))


def test_the_seed_is_an_iso_labelled_cidata_read_only_for_the_guest(tmp_path: Path) -> None:
    if not shutil.which("xorriso"):
        pytest.skip("xorriso is not installed (ci/prepare-host installs it)")
    seed = CloudInit((("user-data", USER_DATA), ("meta-data", b"instance-id: i\n")))
    disk = make_seed(tmp_path / "cloud-init", seed)
    assert disk == Disk(tmp_path / "cloud-init/seed.iso", "raw", "cidata", readonly=True)
    assert disk.path.stat().st_mode & 0o777 == 0o600
    probe = subprocess.run(
        ["blkid", "-p", "-o", "export", str(disk.path)], capture_output=True, text=True, check=True
    )
    assert {"TYPE=iso9660", "LABEL=cidata"} <= set(probe.stdout.splitlines())
    listed = subprocess.run(
        ["xorriso", "-indev", str(disk.path), "-find", "/", "-type", "f"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert sorted(listed.stdout.split()) == ["'/meta-data'", "'/user-data'"]
    blockdev = json.loads(_disk_args((disk,), bootable=False)[1])
    assert blockdev["read-only"] is True
    assert blockdev["file"]["read-only"] is True
    assert "discard" not in blockdev


def test_seed_argv_makes_the_iso_as_cloud_localds_does() -> None:
    argv = seed_argv(Path("/d/files"), Path("/d/seed.iso"))
    assert argv[:3] == ["xorriso", "-as", "mkisofs"]
    assert argv[argv.index("-volid") + 1] == "cidata"
    assert {"-joliet", "-rock"} <= set(argv)
    assert argv[-3:] == ["-output", "/d/seed.iso", "/d/files"]


def test_cloud_init_keeps_the_host_keys_bootc_box_pins() -> None:
    unit = keep_host_keys_unit()
    text = unit.text.decode()
    assert "ssh_deletekeys: false, ssh_genkeytypes: []" in text
    assert "Before=cloud-init.service cloud-init-network.service" in text
    # systemd leaves $$ to the shell as $
    assert "$$(findmnt" in text
    assert "$$r" in text
    assert Provision(cloud_init=CloudInit((("user-data", USER_DATA),))).guest_credentials()[
        0
    ].name == ("systemd.extra-unit.bootc-box-cloud-init.service")


def test_a_kept_vm_keeps_its_seed_and_the_state_key_changes_with_it(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    provision = Provision(cloud_init=parse_cloud_init(tmp_path / "user-data", tmp_path))
    assert provision
    assert provision_from_json(provision_json(provision)) == provision
    assert provision.digest() != Provision().digest()
    other = Provision(cloud_init=CloudInit((("user-data", b"#!/bin/sh\n"),)))
    assert provision.digest() != other.digest()
    record = json.loads(provision_json(provision))
    record["cloud_init"].append(["authorized_keys", "eA=="])
    with pytest.raises(ValueError, match="unknown seed files"):
        provision_from_json(json.dumps(record).encode())
    record["cloud_init"] = [["user-data", "bm90IGNsb3VkLWNvbmZpZw=="]]  # "not cloud-config"
    with pytest.raises(BootcBoxError, match="not in a format cloud-init runs"):
        provision_from_json(json.dumps(record).encode())
