import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.transfer import (
    GUEST_PACK,
    GUEST_UNPACK,
    Endpoint,
    copy_direction,
    from_guest,
    parse_endpoint,
)


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


def archive(*members: tuple[str, str, bytes]) -> io.BytesIO:
    """A tar stream of (name, symlink target or "", file content) members."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, link, content in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o4755
                tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_links_from_the_guest_are_kept_as_they_are(tmp_path: Path) -> None:
    stream = archive(("d/abs", "/etc/passwd", b""), ("d/up", "../../..", b""), ("d/f", "", b"x"))
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(tmp_path, filter=from_guest)
    assert (tmp_path / "d/abs").readlink() == Path("/etc/passwd")
    assert (tmp_path / "d/up").readlink() == Path("../../..")
    assert (tmp_path / "d/f").stat().st_mode & 0o7777 == 0o755  # no set-id bit


def test_the_guest_cannot_write_through_a_link_out_of_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    stream = archive(("d/up", "../..", b""), ("d/up/planted", "", b"evil"))
    with (
        tarfile.open(fileobj=stream, mode="r|") as tar,
        pytest.raises(tarfile.OutsideDestinationError),
    ):
        tar.extractall(destination, filter=from_guest)
    assert not (tmp_path / "planted").exists()
