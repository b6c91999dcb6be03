"""What the place we run in offers, and how to name a fix for it."""

import contextlib
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.programs import PACKAGES

# Set by the box's entrypoint; natively bootc-box runs on the user's host.
IN_BOX_VARIABLE = "BOOTC_BOX_IN_CONTAINER"
# Where the box expects the host's image store (read-only, an additional store).
HOST_STORE = Path("/var/lib/containers/host-storage")
CACHE = Path("/cache")
# Set by the entrypoint when /cache is a throwaway tmpfs (no volume there).
CACHE_LOST_VARIABLE = "BOOTC_BOX_CACHE_IS_TMPFS"
FULL_ID_MAP = ("0", "0", "4294967295")
CAP_SYS_ADMIN = 21
# Set by rootless podman in the user namespace it makes (podman unshare).
PODMAN_USERNS_VARIABLE = "_CONTAINERS_USERNS_CONFIGURED"
# The runtime directory a native command found before it re-ran itself in
# that namespace, where it is root and podman may have changed
# XDG_RUNTIME_DIR: both halves must use one directory.
RUNTIME_DIR_VARIABLE = "BOOTC_BOX_RUNTIME_DIR"


@dataclass(frozen=True)
class Environment:
    in_box: bool
    # Whether what goes into the cache outlives this run: natively always;
    # in a box, when /cache is a volume.
    cache_kept: bool = True

    @property
    def kvm_hint(self) -> str:
        if self.in_box:
            return "add --device /dev/kvm to the podman run line"
        return "load the kvm module and give your user access to /dev/kvm (the kvm group)"

    @property
    def missing_image_hint(self) -> str:
        if self.in_box:
            return (
                "allow a pull with --pull=missing, share the host's images with "
                f"-v /var/lib/containers/storage:{HOST_STORE}:ro, "
                "or mount an archive and pass oci-archive:PATH"
            )
        return "allow a pull with --pull=missing, or pass oci-archive:PATH"

    def archive_hint(self, path: str) -> str:
        if self.in_box:
            return f"mount it into the box, e.g. -v {path}:{path}:ro"
        return "check the path"


def runtime_dir(env: Environment) -> Path:
    """Where state that dies with this box (or this boot of the host) lives."""
    if not env.in_box and os.environ.get(RUNTIME_DIR_VARIABLE):
        return Path(os.environ[RUNTIME_DIR_VARIABLE])
    if not env.in_box and os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "bootc-box"
    if os.geteuid() == 0:
        return Path("/run/bootc-box")
    return private_tmp_dir(Path("/tmp"), os.geteuid())


def private_tmp_dir(tmp: Path, uid: int) -> Path:
    """`tmp`/bootc-box-UID, made ours alone. Anyone can guess the name and
    create it first (or a symlink by that name) to read our keys or plant
    sockets, so an existing one must be our own private directory."""
    path = tmp / f"bootc-box-{uid}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise BootcBoxError(
            f"{path} exists and is not a private directory of this user",
            "set XDG_RUNTIME_DIR to a directory of your own (e.g. /run/user/UID)",
        )
    return path


def probe_environment() -> Environment:
    in_box = os.environ.get(IN_BOX_VARIABLE) == "1"
    return Environment(in_box, cache_kept=not (in_box and os.environ.get(CACHE_LOST_VARIABLE)))


@dataclass(frozen=True)
class Check:
    """One thing `doctor` looked at. `required` ones must be ok to boot."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def effective_capabilities(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def outer_podman_is_rootless(uid_map: str) -> bool:
    """Rootful podman hands the container the whole id range, unchanged."""
    first = uid_map.split("\n", 1)[0].split()
    return tuple(first) != FULL_ID_MAP


def zero_is_host_root(uid_map: str) -> bool:
    """Whether uid 0 here is the host's root: mapped to 0, over more than
    itself. A rootless box maps its 0 to the user (and the box's entrypoint
    mirrors that as one extent of one id), podman unshare too."""
    inner, outer, count = [*uid_map.split("\n", 1)[0].split(), "", "", ""][:3]
    return inner == outer == "0" and count.isdigit() and int(count) > 1


def is_mount_point(path: Path, mountinfo: str) -> bool:
    return any(line.split()[4] == str(path) for line in mountinfo.splitlines() if line)


def _device(name: str, path: Path, purpose: str, fix: str, required: bool) -> Check:
    if not path.exists():
        return Check(name, False, f"{path} is missing ({purpose})", fix, required)
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(name, False, f"{path} is not readable and writable", fix, required)
    return Check(name, True, f"{path} ({purpose})", required=required)


def _privileges(caps: int) -> Check:
    if caps >> CAP_SYS_ADMIN & 1:
        return Check("privileges", True, "CAP_SYS_ADMIN: mounts directly", required=False)
    works = (
        shutil.which("unshare") is not None
        and subprocess.run(["unshare", "--user", "true"], capture_output=True, check=False)
        .returncode == 0
    )  # fmt: skip
    if works:
        return Check("privileges", True, "default capabilities: mounts in a user namespace")
    return Check(
        "privileges",
        False,
        "no CAP_SYS_ADMIN and no user namespaces",
        "add --privileged, or allow user namespaces on the host",
    )


def _outer_podman(uid_map: str) -> Check:
    if outer_podman_is_rootless(uid_map):
        return Check("outer podman", True, "rootless: ids map through subuids", required=False)
    return Check("outer podman", True, "rootful", required=False)


def _cache_volume(mountinfo: str) -> Check:
    if is_mount_point(CACHE, mountinfo):
        return Check("/cache volume", True, "mounted: images are kept between runs")
    return Check(
        "/cache volume",
        False,
        "not a volume: nothing is kept between runs",
        "add -v bootc-box:/cache",
        required=False,
    )


def _host_images() -> Check:
    if (HOST_STORE / "overlay-images").is_dir():
        return Check("host images", True, f"the host's store is shared at {HOST_STORE}")
    return Check(
        "host images",
        False,
        "the host's image store is not shared",
        f"add -v /var/lib/containers/storage:{HOST_STORE}:ro",
        required=False,
    )


def _tool(name: str, path: str | Path | None, package: str, unusable: str = "") -> Check:
    if path is None:
        return Check(name, False, unusable or "not found", f"install the {package} package")
    return Check(name, True, str(path))


def probe_checks(
    env: Environment, virtiofsd: Path | None, old_virtiofsd: Path | None = None
) -> list[Check]:
    proc = Path("/proc/self")
    checks = [
        _device("kvm", Path("/dev/kvm"), "whether it runs the guest is probed at boot",
                f"{env.kvm_hint}, or run with --accel tcg (much slower)", required=False),
        # No fix: shown for what they tell, never as a warning.
        _device("fuse", Path("/dev/fuse"), "not needed", "", required=False),
        _device("vhost-vsock", Path("/dev/vhost-vsock"), "not used yet", "", required=False),
        _privileges(effective_capabilities((proc / "status").read_text())),
        _outer_podman((proc / "uid_map").read_text()),
    ]  # fmt: skip
    if env.in_box:
        checks += [_cache_volume((proc / "mountinfo").read_text()), _host_images()]
    old = f"only QEMU's old C virtiofsd, at {old_virtiofsd}, which takes other options"
    checks += [
        _tool(program, virtiofsd, package, old if old_virtiofsd else "")
        if program == "virtiofsd"
        else _tool(program, shutil.which(program), package)
        for program, package in PACKAGES.items()
    ]
    return checks
