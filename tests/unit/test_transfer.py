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
    copy_out_path,
    from_guest,
    parse_endpoint,
    place,
    unpack,
    unpacking_beside,
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


@pytest.mark.parametrize(("tar_status", "status"), [(0, 0), (1, 0), (2, 2)])
def test_a_file_that_changed_while_packed_is_copied_as_read(
    tmp_path: Path, tar_status: int, status: int
) -> None:
    """GNU tar exits 1 when a file changed as it read it (a live journal);
    a stand-in tar says so here, since no guest runs in a unit test."""
    (tmp_path / "bin").mkdir()
    tar = tmp_path / "bin/tar"
    tar.write_text(
        f"#!/bin/sh\necho archive; echo 'file changed as we read it' >&2; exit {tar_status}\n"
    )
    tar.chmod(0o755)
    (tmp_path / "journal").mkdir()
    packed = subprocess.run(
        ["sh", "-c", GUEST_PACK, "sh", str(tmp_path / "journal")],
        capture_output=True, text=True, check=False,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
    )  # fmt: skip
    assert (packed.returncode, packed.stdout) == (status, "archive\n")


def unpack_in_shell(destination: str, stream: bytes) -> "subprocess.CompletedProcess[str]":
    """GUEST_UNPACK run here by sh, as the guest's shell runs it."""
    return subprocess.run(
        ["sh", "-c", GUEST_UNPACK, "sh", destination, "app.conf"],
        input=stream.decode("latin-1"), capture_output=True, text=True, check=False,
        encoding="latin-1",
    )  # fmt: skip


def test_a_destination_with_a_slash_must_be_a_directory(tmp_path: Path) -> None:
    """`cp app.conf web:/etc/app/` where /etc/app is missing: refused, as
    podman cp refuses it, rather than written as a file named /etc/app."""
    stream = archive(("app.conf", "", b"key=value\n")).getvalue()
    refused = unpack_in_shell(f"{tmp_path}/app/", stream)
    assert refused.returncode == 1
    assert refused.stderr == f"no directory {tmp_path}/app in the VM\n"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "app").mkdir()
    assert unpack_in_shell(f"{tmp_path}/app/", stream).returncode == 0
    assert (tmp_path / "app/app.conf").read_text() == "key=value\n"
    # Without the slash, a new name is the file's.
    assert unpack_in_shell(f"{tmp_path}/renamed.conf", stream).returncode == 0
    assert (tmp_path / "renamed.conf").read_text() == "key=value\n"


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


def receive(stream: io.BytesIO, into: Path) -> None:
    """What copy_out does with the guest's tar stream, from a stream here."""
    with unpacking_beside(into) as unpacked:
        unpack(stream, unpacked)
        place(unpacked, into)


def host_secret(tmp_path: Path) -> Path:
    """A host directory no copy may read or write, as /root/.ssh."""
    secret = tmp_path / "root-ssh"
    secret.mkdir()
    (secret / "id_ed25519").write_text("host key")
    return secret


def test_a_link_from_the_guest_is_never_followed_into_an_existing_directory(
    tmp_path: Path,
) -> None:
    # cp web:/results ./artifacts, with artifacts/results there from an
    # earlier copy: the guest's `results` is a link to the host's keys.
    secret = host_secret(tmp_path)
    into = tmp_path / "artifacts/results"
    into.mkdir(parents=True)
    with pytest.raises(BootcBoxError, match="is a directory here, and a symbolic link in the VM"):
        receive(archive(("results", str(secret), b"")), into)
    assert list(into.iterdir()) == []
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == ["results"]  # nothing left


def test_a_link_from_the_guest_stays_a_link_where_nothing_was(tmp_path: Path) -> None:
    secret = host_secret(tmp_path)
    into = tmp_path / "artifacts/results"
    into.parent.mkdir()
    receive(archive(("results", str(secret), b"")), into)
    assert into.readlink() == secret


def test_a_later_copy_does_not_write_through_a_link_an_earlier_one_left(tmp_path: Path) -> None:
    # First `a -> /tmp/x`, then a copy of the same directory where a is a
    # directory with a file: merged, it would land in /tmp/x.
    outside = tmp_path / "x"
    outside.mkdir()
    into = tmp_path / "artifacts/d"
    into.parent.mkdir()
    receive(archive(("d/a", str(outside), b"")), into)
    with pytest.raises(BootcBoxError, match="is a symbolic link here, and a directory in the VM"):
        receive(archive(("d/a/file", "", b"planted")), into)
    assert list(outside.iterdir()) == []
    assert (into / "a").readlink() == outside


@pytest.mark.parametrize("link", ["ABSOLUTE", "b"])
def test_nothing_is_unpacked_through_a_link_in_the_same_copy(tmp_path: Path, link: str) -> None:
    # `a -> /tmp/x` then `a/file`; and a link inside the copy, which would
    # stay inside but is a link resolved all the same.
    outside = tmp_path / "x"
    outside.mkdir()
    into = tmp_path / "artifacts/d"
    into.parent.mkdir()
    target = str(outside) if link == "ABSOLUTE" else link
    stream = archive(("d/b/keep", "", b"k"), ("d/a", target, b""), ("d/a/file", "", b"planted"))
    with pytest.raises(tarfile.FilterError):
        receive(stream, into)
    assert list(outside.iterdir()) == []
    assert not into.exists()


def test_a_merge_replaces_files_and_links_but_keeps_what_the_guest_did_not_send(
    tmp_path: Path,
) -> None:
    into = tmp_path / "artifacts/d"
    (into / "sub").mkdir(parents=True)
    (into / "sub/old").write_text("kept")
    (into / "f").write_text("old")
    (into / "l").symlink_to(tmp_path / "elsewhere")
    receive(archive(("d/sub/new", "", b"n"), ("d/f", "", b"new"), ("d/l", "", b"file")), into)
    assert (into / "sub/old").read_text() == "kept"
    assert (into / "sub/new").read_text() == "n"
    assert (into / "f").read_text() == "new"
    assert not (into / "l").is_symlink()
    assert (into / "l").read_text() == "file"
    assert not (tmp_path / "elsewhere").exists()


def test_a_copy_never_lands_through_a_link_left_as_dst_or_its_directory(tmp_path: Path) -> None:
    """`cp web:/out/results artifacts/` may leave artifacts/results -> /root/.ssh
    from the guest: a later `cp web:/out/x artifacts/results` must not write there."""
    outside, artifacts = tmp_path / "outside", tmp_path / "artifacts"
    outside.mkdir()
    artifacts.mkdir()
    (artifacts / "results").symlink_to(outside)
    for destination in (artifacts / "results", artifacts / "results" / "x"):
        with pytest.raises(BootcBoxError, match="is a symbolic link, which cp does not copy"):
            copy_out_path("/out/x", destination)
    assert copy_out_path("/out/x", artifacts) == artifacts / "x"
    assert copy_out_path("/out/x", artifacts / "y") == artifacts / "y"
    assert list(outside.iterdir()) == []
