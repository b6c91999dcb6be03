from pathlib import Path, PurePosixPath

import pytest

from bootc_box.binds import NOBODY, Bind, bind_kargs, check_bind_sources, parse_bind, squashed_to
from bootc_box.environment import Environment, zero_is_host_root
from bootc_box.errors import BootcBoxError
from bootc_box.publish import Publish, parse_publish


@pytest.mark.parametrize(
    ("text", "publish"),
    [
        ("8080:80", Publish("127.0.0.1", 8080, 80)),
        ("0.0.0.0:2222:22", Publish("0.0.0.0", 2222, 22)),
        ("5353:53/udp", Publish("127.0.0.1", 5353, 53, "udp")),
    ],
)
def test_publish_binds_loopback_unless_told(text: str, publish: Publish) -> None:
    assert parse_publish(text) == publish


def test_publish_binds_to_loopback_unless_told_otherwise() -> None:
    assert parse_publish("8080:80") == Publish("127.0.0.1", 8080, 80, "tcp")
    assert parse_publish("0.0.0.0:5353:53/udp") == Publish("0.0.0.0", 5353, 53, "udp")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80", "invalid --publish '80'; write it as [IP:]HOSTPORT:GUESTPORT"),
        ("1.2.3:80:80", "invalid address in --publish"),
        ("70000:80", "port out of range in --publish '70000:80'; use ports 1-65535"),
        ("8080:80/sctp", "invalid --publish"),
    ],
)
def test_bad_publish_says_the_form(text: str, message: str) -> None:
    with pytest.raises(BootcBoxError) as err:
        parse_publish(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("/srv/data:/mnt/data", Bind(Path("/srv/data"), PurePosixPath("/mnt/data"))),
        ("/srv/data:/mnt/data:ro", Bind(Path("/srv/data"), PurePosixPath("/mnt/data"), True)),
        ("/srv/data:/mnt/data:rw", Bind(Path("/srv/data"), PurePosixPath("/mnt/data"))),
        # Relative to where bootc-box runs, as podman's -v (made absolute by run).
        ("data:/mnt/data", Bind(Path("data"), PurePosixPath("/mnt/data"))),
    ],
)
def test_bind_forms(text: str, bind: Bind) -> None:
    assert parse_bind(text) == bind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/srv/data", "invalid --bind '/srv/data'; write it as HOSTDIR:GUESTDIR"),
        ("/srv:mnt", "GUESTDIR must be absolute"),
        ("/srv:/", "GUESTDIR must be absolute"),
        (":/mnt", "GUESTDIR must be absolute"),
        ("/srv:/mnt/my data", "GUESTDIR has a space or comma"),
        ("/srv:/mnt:rx", "invalid --bind"),
    ],
)
def test_bad_bind_says_the_form(text: str, message: str) -> None:
    with pytest.raises(BootcBoxError) as err:
        parse_bind(text)
    assert message in str(err.value)


def test_binds_are_mounted_by_systemd_at_boot_without_set_id_or_devices() -> None:
    binds = (parse_bind("/a:/mnt/a"), parse_bind("/b:/mnt/b:ro"))
    assert bind_kargs(binds) == (
        "systemd.mount-extra=bind0:/mnt/a:virtiofs:rw,nosuid,nodev",
        "systemd.mount-extra=bind1:/mnt/b:virtiofs:ro,nosuid,nodev",
    )


def test_a_missing_bind_source_names_the_box_mount(tmp_path: Path) -> None:
    bind = parse_bind(f"{tmp_path}/nope:/mnt")
    with pytest.raises(BootcBoxError) as err:
        check_bind_sources((bind,), Environment(in_box=True))
    assert str(err.value) == (
        f"--bind source {tmp_path}/nope is not a directory; "
        f"mount it into the box first, e.g. -v {tmp_path}/nope:{tmp_path}/nope"
    )
    check_bind_sources((parse_bind(f"{tmp_path}:/mnt"),), Environment(in_box=True))


@pytest.mark.parametrize(
    ("uid_map", "host_root"),
    [
        ("         0          0 4294967295\n", True),  # rootful podman, native root
        ("         0          0 4294967294\n", True),  # the rootful box's own namespace
        ("         0       1001          1\n         1     100000      65536\n", False),
        ("         0          0          1\n         1          1      65536\n", False),
        ("         0     100000      65536\n", False),  # podman --userns=auto
    ],
)
def test_uid_0_is_the_hosts_root_only_where_it_maps_to_0_over_more_than_itself(
    uid_map: str, host_root: bool
) -> None:
    assert zero_is_host_root(uid_map) is host_root


def test_guest_files_in_a_root_owned_directory_are_nobodys_where_root_is_real() -> None:
    assert squashed_to(0, zero_is_host_root=True) == NOBODY == 65534
    assert squashed_to(0, zero_is_host_root=False) == 0  # the user, in a rootless box
    assert squashed_to(1000, zero_is_host_root=True) == 1000
