"""virtiofsd serves the image's mounted root file system to the guest."""

import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, start_process, wait_until
from bootc_box.programs import not_installed

log = logging.getLogger(__name__)

# Debian and Fedora install it outside PATH.
CANDIDATES = (Path("/usr/libexec/virtiofsd"), Path("/usr/lib/qemu/virtiofsd"))


@dataclass(frozen=True)
class VirtiofsdSpec:
    shared_dir: Path
    socket: Path
    readonly: bool = True
    # The image's root never changes under a running VM; a --bind directory
    # is the user's, edited on the host while the guest uses it.
    host_edits: bool = False


def find_virtiofsd() -> Path | None:
    on_path = shutil.which("virtiofsd")
    if on_path:
        return Path(on_path)
    return next((c for c in CANDIDATES if c.is_file()), None)


def virtiofsd_argv(binary: Path, spec: VirtiofsdSpec) -> list[str]:
    argv = [
        str(binary),
        "--socket-path", str(spec.socket),
        "--shared-dir", str(spec.shared_dir),
        # virtiofsd parses what the guest sends; in its own mount, PID and
        # network namespaces, pivoted into the shared directory, a guest that
        # subverts it sees nothing else. bootc-box always runs where it may
        # create them: as root, or in the box's user namespace, which the
        # entrypoint makes whenever the box lacks CAP_SYS_ADMIN (chroot mode
        # would add nothing there and keep the network).
        "--sandbox=namespace",
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


@contextmanager
def start_virtiofsd(spec: VirtiofsdSpec, log_file: Path) -> Iterator[Virtiofsd]:
    """Run virtiofsd for one guest, until its vhost-user socket is there."""
    binary = find_virtiofsd()
    if binary is None:
        raise not_installed("virtiofsd")
    with (
        log_file.open("ab") as out,
        start_process(virtiofsd_argv(binary, spec), stdout=out, stderr=out) as proc,
    ):
        wait_until(
            spec.socket.exists,
            proc,
            timeout=10,
            on_exit=lambda status: BootcBoxError(
                f"virtiofsd exited with status {status}: {last_line(log_file)}"
            ),
            on_timeout=lambda: BootcBoxError(f"virtiofsd did not create {spec.socket} in 10 s"),
        )
        yield Virtiofsd(spec, proc, log_file)
