"""virtiofsd serves the image's mounted root file system to the guest."""

import dataclasses
import enum
import functools
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, start_process, wait_until
from bootc_box.programs import not_installed, program_says

log = logging.getLogger(__name__)

# Debian and Fedora install it outside PATH.
CANDIDATES = (Path("/usr/libexec/virtiofsd"), Path("/usr/lib/qemu/virtiofsd"))


class Sandbox(enum.Enum):
    """virtiofsd parses what the guest sends; sandboxed, a guest that
    subverted it would see nothing but the shared directory. The strongest
    that works here is used: "namespace" (its own mount, PID and network
    namespaces, pivoted into the directory) needs to mount a fresh /proc,
    which a container's masked /proc may forbid (rootless boxes, and boxes
    without the host's store mounted, measured); "chroot" needs only
    CAP_SYS_CHROOT, which the box's user namespace always gives."""

    NAMESPACE = "namespace"
    CHROOT = "chroot"
    NONE = "none"


# --virtiofsd-sandbox, carried in the environment so that a detached
# supervisor and a re-run under `podman unshare` keep the user's choice.
SANDBOX_VARIABLE = "BOOTC_BOX_VIRTIOFSD_SANDBOX"
SANDBOX_CHOICES = ("auto", *(s.value for s in Sandbox))


def sandboxes_to_try(choice: str) -> tuple[Sandbox, ...]:
    """ "auto" tries the strongest first and never runs without one: a
    subverted virtiofsd outside any sandbox sees the whole box (or host)."""
    if choice in ("", "auto"):
        return (Sandbox.NAMESPACE, Sandbox.CHROOT)
    try:
        return (Sandbox(choice),)
    except ValueError:
        raise BootcBoxError(
            f"invalid {SANDBOX_VARIABLE} {choice!r}",
            f"set it to one of {', '.join(SANDBOX_CHOICES)}",
        ) from None


# What a guest's ids become on a writable host directory: every guest id is
# squashed to the directory's owner, so that guest root can neither leave
# files owned by root (setuid-root ones above all) nor chown into another
# user's; the owner's own files look like root's to the guest.
ALL_IDS = 4294967295


def translate_args(owner: tuple[int, int]) -> list[str]:
    uid, gid = owner
    return [
        f"--translate-uid=squash-guest:0:{uid}:{ALL_IDS}",
        f"--translate-uid=host:{uid}:0:1",
        f"--translate-gid=squash-guest:0:{gid}:{ALL_IDS}",
        f"--translate-gid=host:{gid}:0:1",
    ]


@dataclass(frozen=True)
class VirtiofsdSpec:
    shared_dir: Path
    socket: Path
    readonly: bool = True
    # The image's root never changes under a running VM; a --bind directory
    # is the user's, edited on the host while the guest uses it.
    host_edits: bool = False
    sandbox: Sandbox = Sandbox.NAMESPACE
    # The host directory's owner (uid, gid), to which the guest's ids are
    # mapped (translate_args); None for the image's root, served as it is.
    owner: tuple[int, int] | None = None


def installed_virtiofsds() -> list[Path]:
    on_path = shutil.which("virtiofsd")
    return [*([Path(on_path)] if on_path else []), *(c for c in CANDIDATES if c.is_file())]


@functools.cache
def is_rust_virtiofsd(binary: Path) -> bool:
    """The Rust virtiofsd says `virtiofsd 1.13.2`; QEMU's C one (in
    /usr/lib/qemu up to QEMU 7.2, Debian 12's) says `virtiofsd version
    7.2.x` and takes none of the options we pass."""
    return re.match(r"virtiofsd \d", program_says(binary, "--version")) is not None


def find_virtiofsd() -> Path | None:
    return next((p for p in installed_virtiofsds() if is_rust_virtiofsd(p)), None)


def require_virtiofsd() -> Path:
    binary = find_virtiofsd()
    if binary is None:
        raise not_installed("virtiofsd")
    return binary


@functools.cache
def translates_ids(binary: Path) -> bool:
    """Whether this virtiofsd maps ids itself (--translate-uid, virtiofsd
    1.13 and newer), which a writable --bind needs."""
    return "--translate-uid" in program_says(binary, "--help")


def require_id_translation(binary: Path) -> None:
    if not translates_ids(binary):
        raise BootcBoxError(
            f"{binary} cannot map the guest's ids on a writable --bind to the directory's"
            " owner, and without that guest root would own files there",
            "use virtiofsd 1.13 or newer (the box image has it), or make the bind read-only (:ro)",
        )


def find_old_virtiofsd() -> Path | None:
    """QEMU's C virtiofsd, when that is all there is."""
    return next((p for p in installed_virtiofsds() if not is_rust_virtiofsd(p)), None)


def virtiofsd_argv(binary: Path, spec: VirtiofsdSpec) -> list[str]:
    argv = [
        str(binary),
        "--socket-path", str(spec.socket),
        "--shared-dir", str(spec.shared_dir),
        f"--sandbox={spec.sandbox.value}",
        # The guest may cache what cannot change under it, the image: ~3x
        # faster boots than --cache=never (FIELD-NOTES). A bind's files are
        # edited on the host: "auto" lets the guest see that within a second.
        "--cache=" + ("auto" if spec.host_edits else "always"),
        # File handles need CAP_DAC_READ_SEARCH and gain nothing for a
        # read-only tree.
        "--inode-file-handles=never",
    ]  # fmt: skip
    if spec.readonly:
        argv.append("--readonly")
    if spec.owner is not None:
        argv += translate_args(spec.owner)
    return argv


@dataclass(frozen=True)
class Virtiofsd:
    """A running virtiofsd: the socket QEMU connects to, and the process."""

    spec: VirtiofsdSpec
    process: "subprocess.Popen[bytes]"
    log_file: Path

    @property
    def socket(self) -> Path:
        return self.spec.socket

    def check_running(self) -> None:
        """The guest's files are gone with virtiofsd, and the guest would hang
        on its next read: stop with the reason instead."""
        status = self.process.poll()
        if status is not None:
            raise BootcBoxError(
                f"virtiofsd serving {self.spec.shared_dir} exited with status {status}"
                f" ({last_line(self.log_file) or 'no message'}); the guest lost its files",
                f"see {self.log_file}",
            )


# virtiofsd says so once it is in its sandbox and listening.
LISTENING = "Waiting for vhost-user socket connection"


@contextmanager
def start_virtiofsd(
    spec: VirtiofsdSpec, log_file: Path, sandboxes: tuple[Sandbox, ...] = ()
) -> Iterator[Virtiofsd]:
    """Run virtiofsd for one guest, in the first of `sandboxes` that works
    here (by default the strongest, or the one --virtiofsd-sandbox names),
    until it listens on its vhost-user socket. The one it runs in is in
    the handle's spec: the next virtiofsd of the machine needs try no other."""
    binary = require_virtiofsd()
    sandboxes = sandboxes or sandboxes_to_try(os.environ.get(SANDBOX_VARIABLE, ""))
    for sandbox in sandboxes:
        attempt = dataclasses.replace(spec, sandbox=sandbox)
        with _start_listening(binary, attempt, log_file) as proc:
            if proc is None:
                log.debug("virtiofsd cannot enter its %s sandbox here", sandbox.value)
                continue
            if sandbox is Sandbox.NONE:
                log.warning("virtiofsd runs without a sandbox, as --virtiofsd-sandbox=none asks")
            yield Virtiofsd(attempt, proc, log_file)
            return
    raise BootcBoxError(
        f"virtiofsd cannot enter its {' or '.join(s.value for s in sandboxes)} sandbox here"
        f" ({last_line(log_file)})",
        "allow user namespaces and chroot in this container, or pass --virtiofsd-sandbox=none"
        " to run it unconfined (a guest that subverts it then reaches all this container sees)",
    )


@contextmanager
def _start_listening(
    binary: Path, spec: VirtiofsdSpec, log_file: Path
) -> Iterator["subprocess.Popen[bytes] | None"]:
    """virtiofsd started and listening; None when it could not enter its
    sandbox (it creates the socket before it tries, so the socket proves
    nothing)."""
    spec.socket.unlink(missing_ok=True)
    with log_file.open("ab") as out:
        start = out.tell()  # this attempt's messages begin here

        def exited(status: int) -> BaseException:
            if "entering sandbox" in _since(log_file, start):
                return _NotInSandbox()
            return BootcBoxError(f"virtiofsd exited with status {status}: {last_line(log_file)}")

        with start_process(virtiofsd_argv(binary, spec), stdout=out, stderr=out) as proc:
            try:
                wait_until(
                    lambda: LISTENING in _since(log_file, start),
                    proc,
                    timeout=10,
                    on_exit=exited,
                    on_timeout=lambda: BootcBoxError(
                        f"virtiofsd did not listen on {spec.socket} in 10 s"
                    ),
                )
            except _NotInSandbox:
                yield None
                return
            yield proc


class _NotInSandbox(Exception):
    pass


def _since(log_file: Path, offset: int) -> str:
    with log_file.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")
