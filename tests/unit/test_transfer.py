import subprocess

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.transfer import GUEST_PACK, GUEST_UNPACK, Endpoint, copy_direction, parse_endpoint


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("web:/etc/motd", Endpoint("/etc/motd", "web")),
        ("vm-1a2b3c:relative/file", Endpoint("relative/file", "vm-1a2b3c")),
        ("./a:b", Endpoint("./a:b")),
        ("/tmp/a:b", Endpoint("/tmp/a:b")),
        ("plain", Endpoint("plain")),
    ],
)
def test_name_colon_path_is_in_a_vm_and_paths_are_local(text: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(text) == endpoint


def test_a_vm_with_no_path_is_refused() -> None:
    with pytest.raises(BootcBoxError, match="names no path in the VM; write web:/PATH"):
        parse_endpoint("web:")


@pytest.mark.parametrize(
    ("source", "destination", "direction"),
    [("f", "web:/tmp", "in"), ("web:/etc", "out", "out")],
)
def test_direction(source: str, destination: str, direction: str) -> None:
    assert copy_direction(parse_endpoint(source), parse_endpoint(destination)) == direction


@pytest.mark.parametrize(("source", "destination"), [("a", "b"), ("web:/a", "db:/b")])
def test_exactly_one_side_is_a_vm(source: str, destination: str) -> None:
    with pytest.raises(BootcBoxError, match="one of SRC and DST must be in a VM"):
        copy_direction(parse_endpoint(source), parse_endpoint(destination))


@pytest.mark.parametrize("script", [GUEST_PACK, GUEST_UNPACK])
def test_guest_scripts_are_posix_sh(script: str) -> None:
    # dash is what a minimal guest's /bin/sh is likely to be.
    assert subprocess.run(["dash", "-n", "-c", script], check=False).returncode == 0
