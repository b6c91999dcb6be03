import base64
import json
import stat
import subprocess
from pathlib import Path

import pytest

from bootc_box.boot import Disk
from bootc_box.errors import BootcBoxError
from bootc_box.provision import Provision, make_swap, parse_disk_file, parse_provision, swap_unit
from bootc_box.units import Unit, parse_unit, read_units, unit_credentials
from bootc_box.user_credentials import (
    CREDENTIAL_MAX,
    Credential,
    parse_load_credential,
    parse_set_credential,
    write_credentials,
)

SERVICE = b"""[Unit]
Description=hello

[Service]
ExecStart=/bin/sh -c 'echo a \\
  b'
# a comment
[Install]
WantedBy=multi-user.target default.target
RequiredBy=sockets.target
"""


def test_set_credential_reads_c_escapes_as_systemd_vmspawn_does() -> None:
    assert parse_set_credential(r"app.greeting:hello\nworld\x00") == Credential(
        "app.greeting", b"hello\nworld\x00"
    )
    # Only the first colon splits: a value may hold more.
    assert parse_set_credential("url:http://x:80").value == b"http://x:80"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("novalue", "'novalue' has no value; write it as --set-credential ID:VALUE"),
        (":x", "invalid credential ID ''"),
        ("a/b:x", "invalid credential ID 'a/b'"),
        ("..:x", "invalid credential ID '..'"),
        ("tmpfiles.extra:x", "--set-credential sets tmpfiles.extra, which bootc-box sets itself"),
        ("ssh.authorized_keys.root:x", "which bootc-box sets itself for its login; give your key"),
    ],
)
def test_a_bad_credential_is_refused_naming_the_fix(text: str, message: str) -> None:
    with pytest.raises(BootcBoxError) as e:
        parse_set_credential(text)
    assert message in str(e.value)


def test_a_credential_value_never_shows_in_its_repr() -> None:
    assert "s3cret" not in repr(Credential("token", b"s3cret"))


def test_load_credential_reads_the_file_relative_to_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"\x00\x01bytes")
    assert parse_load_credential("app.key:key", tmp_path) == Credential("app.key", b"\x00\x01bytes")
    with pytest.raises(BootcBoxError, match=r"--load-credential app\.key: cannot read .*/missing"):
        parse_load_credential("app.key:missing", tmp_path)
    (tmp_path / "big").write_bytes(b"x" * (CREDENTIAL_MAX + 1))
    with pytest.raises(BootcBoxError, match="larger than 1 MiB"):
        parse_load_credential("big:big", tmp_path)


def test_a_credential_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(BootcBoxError, match="credential a is given twice"):
        parse_provision(set_credentials=("a:1",), load_credentials=("a:f",), cwd=tmp_path)


def test_a_units_install_section_says_what_wants_it() -> None:
    unit = parse_unit("hello.service", SERVICE, "hello.service")
    assert unit.enabled_by == (
        ("Wants", "multi-user.target"),
        ("Wants", "default.target"),
        ("Requires", "sockets.target"),
    )
    # A template is enabled by instances, which its file cannot name.
    assert parse_unit("t@.service", SERVICE, "t@.service").enabled_by == ()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("README", b"[Unit]\n", "is not named as a unit ('README')"),
        ("x.conf", b"[Unit]\n", "is not named as a unit"),
        ("a b.service", b"[Unit]\n", "is not named as a unit"),
        ("x.service", b"hello world\n", "line 1 is neither [Section] nor KEY=VALUE"),
        ("x.service", b"Description=x\n[Unit]\n", "line 1 is neither [Section] nor KEY=VALUE"),
        ("x.service", b"# only a comment\n", "it has no [Section]"),
        ("x.service", b"[Unit]\n\xff\n", "it is not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_a_unit_is_refused(name: str, text: bytes, message: str) -> None:
    with pytest.raises(BootcBoxError) as e:
        parse_unit(name, text, f"units/{name}")
    assert f"units/{name}" in str(e.value)
    assert message in str(e.value)


def test_units_become_extra_unit_credentials_and_one_drop_in_per_target() -> None:
    units = (
        Unit("a.service", b"[Service]\n", (("Wants", "multi-user.target"),)),
        Unit("b.timer", b"[Timer]\n", (("Wants", "multi-user.target"), ("Wants", "timers.target"))),
        Unit("c.service", b"[Service]\n"),
    )
    credentials = {c.name: c.value for c in unit_credentials(units)}
    assert credentials == {
        "systemd.extra-unit.a.service": b"[Service]\n",
        "systemd.extra-unit.b.timer": b"[Timer]\n",
        "systemd.extra-unit.c.service": b"[Service]\n",
        "systemd.unit-dropin.multi-user.target~bootc-box": (
            b"[Unit]\nWants=a.service\nWants=b.timer\n"
        ),
        "systemd.unit-dropin.timers.target~bootc-box": b"[Unit]\nWants=b.timer\n",
    }


def test_a_units_directory_in_bcvks_layout_enables_units_by_their_wants_links(
    tmp_path: Path,
) -> None:
    system = tmp_path / "system"
    (system / "multi-user.target.wants").mkdir(parents=True)
    (system / "hello.service").write_bytes(SERVICE)
    (system / "linked.service").write_bytes(b"[Service]\nExecStart=/bin/true\n")
    (system / "multi-user.target.wants/linked.service").symlink_to("../linked.service")
    units = {u.name: u for u in read_units(tmp_path)}
    assert set(units) == {"hello.service", "linked.service"}
    assert units["linked.service"].enabled_by == (("Wants", "multi-user.target"),)
    (system / "multi-user.target.wants/gone.service").symlink_to("../gone.service")
    with pytest.raises(BootcBoxError, match=r"gone\.service names no unit there"):
        read_units(tmp_path)


def test_a_units_directory_that_is_missing_or_holds_other_things_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(BootcBoxError, match=r"--systemd-units .*/nowhere: no such directory"):
        read_units(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    with pytest.raises(BootcBoxError, match="notes is not a file"):
        read_units(tmp_path)


def test_swap_is_a_swap_unit_for_the_disk_named_swap(tmp_path: Path) -> None:
    unit = swap_unit()
    # systemd's own name for the path (systemd-escape --path --suffix=swap).
    assert unit.name == "dev-disk-by\\x2did-virtio\\x2dswap.swap"
    assert b"What=/dev/disk/by-id/virtio-swap\n" in unit.text
    assert unit.enabled_by == (("Wants", "swap.target"),)
    disk = make_swap(tmp_path / "swap.raw", 64 << 20)
    assert disk == Disk(tmp_path / "swap.raw", "raw", serial="swap")
    assert disk.path.stat().st_size == 64 << 20
    assert disk.path.stat().st_blocks * 512 < 1 << 20  # sparse
    found = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", str(disk.path)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert found.stdout.strip() == "swap"


def test_a_disk_file_is_named_by_its_file_and_its_format_by_its_suffix(tmp_path: Path) -> None:
    (tmp_path / "data.raw").write_bytes(b"")
    (tmp_path / "data.qcow2").write_bytes(b"")  # a raw file named so: refused as not qcow2
    assert parse_disk_file("data.raw", tmp_path) == Disk(tmp_path / "data.raw", "raw", "data")
    assert parse_disk_file("data.raw:logs", tmp_path).serial == "logs"
    assert parse_disk_file("data.qcow2:x:raw", tmp_path).format == "raw"
    with pytest.raises(BootcBoxError, match="is not a qcow2 image"):
        parse_disk_file("data.qcow2", tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("missing.raw", "missing.raw is not a file; create it first, e.g. truncate -s 10G"),
        ("d.raw:root", "invalid disk name 'root'"),
        ("d.raw:swap", "invalid disk name 'swap'"),
        ("d.raw:a/b", "invalid disk name 'a/b'"),
        ("d.raw:" + "x" * 21, "invalid disk name"),
        ("d.raw:d:vmdk", "unknown format 'vmdk'"),
    ],
)
def test_a_bad_disk_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.raw").write_bytes(b"")
    with pytest.raises(BootcBoxError) as e:
        parse_disk_file(text, tmp_path)
    assert message in str(e.value)


def test_a_disk_attached_twice_or_two_disks_of_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.raw").write_bytes(b"")
    (tmp_path / "b.raw").write_bytes(b"")
    with pytest.raises(BootcBoxError, match=r"a\.raw is already attached"):
        parse_provision(disk_files=("a.raw", "./a.raw:other"), cwd=tmp_path)
    with pytest.raises(BootcBoxError, match="names two disks same"):
        parse_provision(disk_files=("a.raw:same", "b.raw:same"), cwd=tmp_path)


def test_credentials_are_written_private_in_their_own_directory(tmp_path: Path) -> None:
    long_name = "systemd.extra-unit." + "x" * 240 + ".service"
    files = write_credentials(tmp_path / "p", (Credential("a", b"1"), Credential(long_name, b"2")))
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o700
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    prefix, _, value = files[1].read_text().partition("=")
    assert prefix == f"io.systemd.credential.binary:{long_name}"
    assert base64.b64decode(value) == b"2"


def test_the_state_key_part_changes_with_every_credential_and_unit() -> None:
    base = Provision(credentials=(Credential("a", b"1"),))
    digests = {
        base.digest(),
        Provision(credentials=(Credential("a", b"2"),)).digest(),
        Provision(credentials=(Credential("a1", b""),)).digest(),
        Provision(credentials=(Credential("a", b"1"),), swap_bytes=1 << 30).digest(),
        Provision(credentials=base.credentials, units=(Unit("u.service", b"[Unit]\n"),)).digest(),
    }
    assert len(digests) == 5
    assert not Provision()
    assert Provision(swap_bytes=1)


def test_a_kept_vm_keeps_its_provisioning_and_reads_it_back_checked(tmp_path: Path) -> None:
    from bootc_box.provision import provision_from_json, provision_json  # noqa: PLC0415

    (tmp_path / "d.raw").write_bytes(b"")
    provision = Provision(
        credentials=(Credential("a", b"\x00secret"),),
        units=(parse_unit("hello.service", SERVICE, "hello.service"),),
        disk_files=(Disk(tmp_path / "d.raw", "raw", "d"),),
        swap_bytes=1 << 30,
    )
    assert provision_from_json(provision_json(provision)) == provision
    # Whoever can write the cache can write the record: checked as run checks its options.
    for key, value, error in [
        ("credentials", [["tmpfiles.extra", "eA=="]], "bootc-box sets itself"),
        ("credentials", [["a", "not base64!"]], "base64"),
        ("units", [["x.service", "eA==", []]], "neither [Section] nor KEY=VALUE"),
        ("units", [["hello.service", _b64(SERVICE), [["Wants", "/etc/x"]]]], "is no unit"),
        ("disk_files", [["nowhere", "raw", "d"]], "is not absolute"),
        ("disk_files", [["/d", "vmdk", "d"]], "no known format"),
        ("disk_files", [["/d", "raw", "root"]], "an invalid name"),
        ("swap_bytes", -1, "swap_bytes is not a size"),
    ]:
        record = json.loads(provision_json(provision))
        record[key] = value
        with pytest.raises((BootcBoxError, ValueError)) as e:
            provision_from_json(json.dumps(record).encode())
        assert error in str(e.value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_ignition_config_is_checked_and_goes_on_fw_cfg(tmp_path: Path) -> None:
    from bootc_box.provision import parse_ignition  # noqa: PLC0415
    from bootc_box.qemu import qemu_argv  # noqa: PLC0415
    from tests.unit.test_qemu import option, spec  # noqa: PLC0415

    (tmp_path / "ok.ign").write_text('{"ignition": {"version": "3.4.0"}}')
    assert parse_ignition(Path("ok.ign"), tmp_path) == b'{"ignition": {"version": "3.4.0"}}'
    assert parse_ignition(None, tmp_path) == b""
    (tmp_path / "bad.ign").write_text("variant: fcos\n")  # butane, not yet Ignition
    with pytest.raises(BootcBoxError, match=r"is not an Ignition config .*; write one by hand"):
        parse_ignition(Path("bad.ign"), tmp_path)
    with pytest.raises(BootcBoxError, match="cannot read"):
        parse_ignition(Path("missing.ign"), tmp_path)
    argv = qemu_argv(spec(fw_cfg=(("opt/com.coreos/config", Path("/run/a,b.ign")),)), "qemu")
    assert option(argv, "-fw_cfg") == ["name=opt/com.coreos/config,file=/run/a,,b.ign"]


def test_the_host_store_is_for_podman_in_the_guests_logins() -> None:
    from bootc_box.provision import storage_unit  # noqa: PLC0415

    provision = Provision(host_storage=True)
    assert provision
    credentials = {c.name: c.value for c in provision.guest_credentials()}
    unit = credentials["systemd.extra-unit.bootc-box-storage.service"]
    assert b"STORAGE_OPTS=additionalimagestore=/run/host-container-storage" in unit
    assert b"Before=systemd-user-sessions.service" in unit
    assert credentials["systemd.unit-dropin.sysinit.target~bootc-box"] == (
        b"[Unit]\nWants=bootc-box-storage.service\n"
    )
    assert parse_unit(storage_unit().name, unit, "storage").name == "bootc-box-storage.service"
    assert Provision(host_storage=True).digest() != Provision().digest()
    assert Provision(ignition=b"{}").digest() != Provision(ignition=b"{ }").digest()


def test_a_kept_vms_disk_file_that_moved_is_named_at_boot_not_taken_for_a_broken_vm(
    tmp_path: Path,
) -> None:
    from bootc_box.provision import check_disk_files_exist, provision_from_json, provision_json  # noqa: PLC0415

    (tmp_path / "a:b").mkdir()  # a colon in the path, kept as it is
    disk = tmp_path / "a:b/d.raw"
    disk.write_bytes(b"")
    provision = provision_from_json(provision_json(Provision(disk_files=(Disk(disk, "raw", "d"),))))
    assert provision.disk_files == (Disk(disk, "raw", "d"),)
    check_disk_files_exist(provision.disk_files)
    disk.unlink()
    with pytest.raises(BootcBoxError, match=r"d\.raw is not a file; put it back"):
        check_disk_files_exist(provision.disk_files)


def test_what_a_unit_is_wanted_by_must_be_a_unit() -> None:
    with pytest.raises(BootcBoxError, match=r"line 2 names '/etc/x', which is not a unit"):
        parse_unit("a.service", b"[Install]\nWantedBy=/etc/x\n", "a.service")


def test_no_credential_reaches_the_guest_twice_nor_shadows_bootc_boxs_own(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match="which bootc-box sets itself"):
        parse_set_credential("bootc-box.exec:x")
    (tmp_path / "u").mkdir()
    (tmp_path / "u/a.service").write_text("[Service]\n")
    with pytest.raises(
        BootcBoxError, match=r"credential systemd\.extra-unit\.a\.service is given twice"
    ):
        parse_provision(
            set_credentials=("systemd.extra-unit.a.service:[Unit]",), units_dir=Path("u"),
            cwd=tmp_path,
        )  # fmt: skip


def test_swap_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BootcBoxError, match=r"cannot make swap for --add-swap in .*; set TMPDIR"):
        make_swap(tmp_path / "missing-dir/swap.raw", 1 << 20)
