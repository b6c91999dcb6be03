"""`--bind HOSTDIR:GUESTDIR[:ro]`: a host directory shared over its own
virtiofsd and mounted in the guest at boot, with no change to the image."""

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bootc_box.environment import Environment, zero_is_host_root
from bootc_box.errors import BootcBoxError


@dataclass(frozen=True)
class Bind:
    source: Path
    target: PurePosixPath
    readonly: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.readonly else 'rw'}"


def parse_bind(text: str) -> Bind:
    parts = text.split(":")
    hint = "write it as HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        readonly = parts.pop() == "ro"
    elif len(parts) == 2:
        readonly = False
    else:
        raise BootcBoxError(f"invalid --bind {text!r}", hint)
    # HOSTDIR may be relative, as in podman's -v; GUESTDIR may not.
    source, target = Path(parts[0]), PurePosixPath(parts[1])
    if not parts[0] or not target.is_absolute() or target == PurePosixPath("/"):
        raise BootcBoxError(f"invalid --bind {text!r}: GUESTDIR must be absolute", hint)
    if any(c.isspace() or c == "," for c in str(target)):
        # The target travels on the kernel command line.
        raise BootcBoxError(f"invalid --bind {text!r}: GUESTDIR has a space or comma", hint)
    return Bind(source, target, readonly)


def check_bind_sources(binds: tuple[Bind, ...], env: Environment) -> None:
    for bind in binds:
        if not bind.source.is_dir():
            raise BootcBoxError(
                f"--bind source {bind.source} is not a directory",
                f"mount it into the box first, e.g. -v {bind.source}:{bind.source}"
                if env.in_box
                else "create it, or check the path",
            )


def bind_tag(index: int) -> str:
    return f"bind{index}"


# Whom a guest's files in a root-owned host directory belong to.
NOBODY = 65534


def bind_owner(bind: Bind) -> tuple[int, int] | None:
    """Whose the guest's files in a writable host directory are: its
    owner's (virtiofsd.translate_args), or nobody's where that is the
    host's root, so that guest root never makes a root-owned (setuid-root)
    file on the host. A read-only one keeps its files' own ids, which an
    image store shared with to-disk needs."""
    if bind.readonly:
        return None
    info = bind.source.stat()
    host_root = zero_is_host_root(Path("/proc/self/uid_map").read_text())
    return squashed_to(info.st_uid, host_root), squashed_to(info.st_gid, host_root)


def squashed_to(owner: int, zero_is_host_root: bool) -> int:
    return NOBODY if owner == 0 and zero_is_host_root else owner


def bind_kargs(binds: tuple[Bind, ...]) -> tuple[str, ...]:
    """systemd mounts each share at boot (systemd.mount-extra, systemd >= 254);
    nosuid and nodev, so that a set-id file or a device node that lands in a
    host directory grants nothing in the guest either."""
    return tuple(
        f"systemd.mount-extra={bind_tag(i)}:{b.target}:virtiofs:"
        f"{'ro' if b.readonly else 'rw'},nosuid,nodev"
        for i, b in enumerate(binds)
    )
