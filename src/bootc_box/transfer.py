"""`bootc-box cp`: files and directories to and from a VM, as tar streams over
its SSH login (the guest needs only `tar` and `sh`, which bootc images have).

The destination follows podman cp: an existing directory receives SRC under
its own name; any other path is where SRC lands, renamed. Either way the
copy is unpacked beside the destination and renamed into place, so a failed
copy leaves no half of it there. A symbolic link from the guest arrives as
a link and is never followed here, nor is one it left by an earlier copy."""

import contextlib
import enum
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.manage import reach_vm
from bootc_box.processes import last_line_of
from bootc_box.ssh import SshTarget, ssh_argv
from bootc_box.vms import VM_NAME

_REMOTE = re.compile(rf"(?P<name>{VM_NAME}):(?P<path>.*)")

# Runs in the guest with the destination and SRC's name as $1 and $2,
# reading SRC as a tar stream on stdin.
GUEST_UNPACK = r"""
set -eu
dst=${1%/}; name=$2
# DST/ names a directory, as podman cp takes it: never a new file DST.
case $1 in */) [ -d "$dst" ] || { echo "no directory $dst in the VM" >&2; exit 1; } ;; esac
if [ -d "$dst" ]; then dst=$dst/$name; fi
parent=$(dirname -- "$dst")
[ -d "$parent" ] || { echo "no directory $parent in the VM" >&2; exit 1; }
tmp=$(mktemp -d "$parent/.bootc-box-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
tar -C "$tmp" --no-same-owner -xf -
# Into a directory that is there already, as cp -r does: merged.
if [ -d "$dst" ] && [ ! -L "$dst" ]; then cp -a -- "$tmp/$name/." "$dst/"
else mv -f -- "$tmp/$name" "$dst"; fi
"""

# Runs in the guest with SRC as $1: writes it as a tar stream on stdout.
GUEST_PACK = r"""
set -eu
src=${1%/}
[ -e "$src" ] || { echo "$src: no such file or directory in the VM" >&2; exit 1; }
cd -- "$(dirname -- "$src")"
# GNU tar's status 1 is "file changed as we read it" (a live journal, a
# log): copied as read, as podman cp does; 2 is a fatal error.
tar -cf - -- "$(basename -- "$src")" || { status=$?; [ "$status" -eq 1 ] || exit "$status"; }
"""


@dataclass(frozen=True)
class Endpoint:
    """One side of a copy: a path on this machine (vm None) or in VM `vm`."""

    path: str
    vm: str | None = None


def parse_endpoint(text: str) -> Endpoint:
    """`NAME:PATH` names a path in a VM; anything else (`./a:b`, `/a:b`) is local."""
    match = _REMOTE.fullmatch(text)
    if match and not text.startswith(("/", ".")):
        if not match["path"]:
            raise BootcBoxError(f"{text!r} names no path in the VM", f"write {text}/PATH")
        return Endpoint(match["path"], match["name"])
    if not text:
        raise BootcBoxError("an empty path", "name a file or directory")
    return Endpoint(text)


def copy_direction(source: Endpoint, destination: Endpoint) -> str:
    """'in' (to a VM) or 'out' (from one); exactly one side is a VM's."""
    if (source.vm is None) == (destination.vm is None):
        raise BootcBoxError(
            "one of SRC and DST must be in a VM, the other here",
            "write bootc-box cp FILE NAME:/PATH or bootc-box cp NAME:/PATH FILE",
        )
    return "in" if destination.vm else "out"


def tar_info_as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files arrive owned by the guest's root, as podman cp gives a
    container's files to its root, whoever owns them here."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class ThroughLinkError(tarfile.FilterError):
    """A member the guest sent under (or onto) a link it sent before."""

    def __init__(self, member: tarfile.TarInfo, link: str) -> None:
        self.tarinfo = member
        super().__init__(f"{member.name!r} would be unpacked through the link {link!r}")


def from_guest(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """tarfile's "data" filter: the guest is not trusted to write outside the
    destination, or to make devices or set-id files here. But a symbolic
    link to an absolute path (/etc/alternatives/...) is kept as the guest
    has it, as cp -a and podman cp keep it: it is only a name here, never
    followed, so a later member under it (or on it) is refused."""
    if member.issym():
        checked = tarfile.data_filter(member.replace(linkname=".", deep=False), destination)
        checked = checked.replace(linkname=member.linkname, deep=False)
    else:
        checked = tarfile.data_filter(member, destination)
    for name in (checked.name, checked.linkname if checked.islnk() else ""):
        if name and (link := first_link(name, Path(destination))):
            raise ThroughLinkError(checked, link)
    return checked


def first_link(name: str, destination: Path) -> str | None:
    """The first of `name`'s components under `destination` that is a
    symbolic link already there, or `..`: tarfile would resolve either, and
    a link the guest made is not ours to follow, even one that points inside."""
    path = destination
    for part in PurePosixPath(name).parts:
        path = path / part
        if part == ".." or path.is_symlink():
            return str(path.relative_to(destination))
    return None


def copy_in(target: SshTarget, source: Path, destination: str) -> None:
    if not source.exists():
        raise BootcBoxError(f"{source} does not exist", "check the path")
    name = source.resolve().name
    argv = ssh_argv(target, ["sh", "-c", GUEST_UNPACK, "sh", destination, name])
    with tempfile.TemporaryFile() as errors:
        guest = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=errors)
        assert guest.stdin is not None
        try:
            with tarfile.open(fileobj=guest.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(source, arcname=name, filter=tar_info_as_root)
        except BrokenPipeError:
            pass  # the guest stopped reading; its status and message say why
        finally:
            guest.stdin.close()
        if guest.wait() != 0:
            raise copy_failed(errors, f"cannot copy {source} to the VM")


def copy_out_path(source: str, destination: Path) -> Path:
    """Where SRC lands: in DST when DST is a directory, else as DST. Neither
    DST nor the directory it lands in may be a link: an earlier copy may
    have left one there from the guest, pointing anywhere on this host."""
    for path in (destination, destination.parent):
        if path.is_symlink():
            raise BootcBoxError(
                f"{path} is a symbolic link, which cp does not copy through",
                f"name the directory it points to ({path.resolve()}) if you made the link",
            )
    into = destination
    if destination.is_dir():
        into = destination / PurePosixPath(source.rstrip("/")).name
    if not into.parent.is_dir():
        raise BootcBoxError(f"no directory {into.parent}", "create it first")
    return into


def copy_out(target: SshTarget, source: str, destination: Path) -> None:
    into = copy_out_path(source, destination)
    argv = ssh_argv(target, ["sh", "-c", GUEST_PACK, "sh", source])
    what = f"cannot copy {source} from the VM"
    with tempfile.TemporaryFile() as errors, unpacking_beside(into) as unpacked:
        guest = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        assert guest.stdout is not None
        try:
            unpack(guest.stdout, unpacked)
        except tarfile.TarError as e:
            guest.stdout.close()  # a guest still writing stops on EPIPE
            guest.wait()
            # What the guest said (SRC missing), else what was refused.
            raise copy_failed(errors, what, default=str(e)) from e
        finally:
            guest.stdout.close()
        if guest.wait() != 0:
            raise copy_failed(errors, what)
        place(unpacked, into)


@contextlib.contextmanager
def unpacking_beside(into: Path) -> Iterator[Path]:
    """A directory beside `into` to unpack in, on its file system, so that
    what arrives is renamed into place; removed with whatever is left."""
    unpacked = Path(tempfile.mkdtemp(prefix=".bootc-box-cp.", dir=into.parent))
    try:
        yield unpacked
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def unpack(stream: IO[bytes], unpacked: Path) -> None:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(unpacked, filter=from_guest)


def place(unpacked: Path, into: Path) -> None:
    entries = list(unpacked.iterdir())
    if len(entries) != 1:
        raise BootcBoxError(f"the VM sent {len(entries)} files where one was asked for")
    for moved, to in moves(entries[0], into):
        moved.replace(to)


def moves(copied: Path, into: Path) -> list[tuple[Path, Path]]:
    """The renames that put `copied` at `into`, as cp -r does, except that no
    symbolic link is followed on either side: one from the guest (or left
    by an earlier copy) could point anywhere here. A directory merges into
    a directory; anything else takes the place of what is not a directory.
    A conflict refuses the copy before anything has moved."""
    if not os.path.lexists(into):
        return [(copied, into)]
    here, there = Kind.of(into), Kind.of(copied)
    if here is there is Kind.DIRECTORY:
        return [
            move for entry in sorted(copied.iterdir()) for move in moves(entry, into / entry.name)
        ]
    if Kind.DIRECTORY in (here, there):
        raise BootcBoxError(
            f"{into} is {here.value} here, and {there.value} in the VM",
            "remove it, or copy to another path",
        )
    return [(copied, into)]


class Kind(enum.Enum):
    FILE = "a file"
    DIRECTORY = "a directory"
    LINK = "a symbolic link"

    @classmethod
    def of(cls, path: Path) -> "Kind":
        if path.is_symlink():
            return cls.LINK
        return cls.DIRECTORY if path.is_dir() else cls.FILE


def copy_failed(errors: IO[bytes], what: str, default: str = "the copy failed") -> BootcBoxError:
    """The guest's last word on stderr (tar's, or the script's)."""
    errors.seek(0)
    return BootcBoxError(f"{what}: {last_line_of(errors.read().decode(errors='replace'), default)}")


def run_cp(env: Environment, source: str, destination: str, timeout: float) -> int:
    src, dst = parse_endpoint(source), parse_endpoint(destination)
    if copy_direction(src, dst) == "in":
        copy_in(reach_vm(env, dst.vm, timeout), Path(src.path), dst.path)
    else:
        copy_out(reach_vm(env, src.vm, timeout), src.path, Path(dst.path))
    return 0
