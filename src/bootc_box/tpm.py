"""A software TPM 2.0 for the guest (--tpm): swtpm from Debian's swtpm
package, one per machine, started with the machine's file servers and
stopped with them (machine.py). Its state lives in a directory: a kept VM's
own, so that what the guest seals to its TPM survives stop and start, or
the run's, thrown away with it."""

import logging
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError
from bootc_box.processes import last_line, start_process, wait_until

log = logging.getLogger(__name__)

SWTPM = "swtpm"
# The TPM's state directory: in a kept VM's directory, or the run's.
TPM_STATE = "tpm"


@dataclass(frozen=True)
class TpmSpec:
    """A TPM: where swtpm keeps its state, and the control socket QEMU uses."""

    state: Path
    socket: Path


def find_swtpm() -> Path | None:
    found = shutil.which(SWTPM)
    return Path(found) if found else None


def require_swtpm() -> Path:
    binary = find_swtpm()
    if binary is None:
        raise BootcBoxError(
            "--tpm needs swtpm, which is not installed here",
            "install the swtpm package (the box image has it), or leave --tpm out",
        )
    return binary


def swtpm_argv(binary: Path, spec: TpmSpec, log_file: Path) -> list[str]:
    return [
        str(binary), "socket", "--tpm2",
        # mode: the state holds the TPM's seeds, what every sealed secret
        # hangs on; only its owner may read it.
        "--tpmstate", f"dir={spec.state},mode=0600",
        "--ctrl", f"type=unixio,path={spec.socket},mode=0600",
        # Its own messages, beside what it says on stderr (the same file).
        "--log", f"file={log_file},level=1",
        # The guest's commands are parsed here: swtpm's own system call
        # filter ends it on anything a TPM has no use for.
        "--seccomp", "action=kill",
    ]  # fmt: skip


def check_state_dir(state: Path) -> None:
    """The state directory as swtpm needs it, with nothing in it reached
    through a link: a kept VM's lies in /cache, which other boxes may
    write, and swtpm writes its files by name."""
    planted = state.is_symlink() or (state.exists() and not state.is_dir())
    if not planted and state.is_dir():
        planted = any(entry.is_symlink() or not entry.is_file() for entry in state.iterdir())
    if planted:
        raise BootcBoxError(
            f"the TPM state {state} is not what swtpm left there",
            f"remove {state} (what was sealed to the TPM is lost), or the VM with bootc-box rm",
        )
    state.mkdir(mode=0o700, exist_ok=True)
    state.chmod(0o700)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextmanager
def start_swtpm(spec: TpmSpec, log_file: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """swtpm serving the TPM in `spec.state`, until it accepts on its
    control socket; terminated and reaped when the block ends."""
    binary = require_swtpm()
    for path in (spec.state, spec.socket, log_file):
        if "," in str(path):
            # swtpm's options end a value at a comma, and have no escape for one.
            raise BootcBoxError(
                f"swtpm cannot use {path}: its path has a comma",
                "use cache and runtime directories (XDG_CACHE_HOME, XDG_RUNTIME_DIR) without one",
            )
    check_state_dir(spec.state)
    spec.socket.unlink(missing_ok=True)
    with (
        log_file.open("ab") as out,
        start_process(swtpm_argv(binary, spec, log_file), stdout=out, stderr=out) as proc,
    ):
        wait_until(
            lambda: spec.socket.exists() and _listening(spec.socket),
            proc,
            timeout=10,
            on_exit=lambda status: BootcBoxError(
                f"swtpm exited with status {status}: {last_line(log_file)}",
                f"see {log_file}",
            ),
            on_timeout=lambda: BootcBoxError(
                f"swtpm did not listen on {spec.socket} in 10 s", f"see {log_file}"
            ),
        )
        yield proc
