"""The programs bootc-box runs, the Debian packages that hold them, and the
one-line errors for the ways running them can fail."""

import shutil
import subprocess
from pathlib import Path

from bootc_box.errors import BootcBoxError

PACKAGES = {
    "podman": "podman",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "virtiofsd": "virtiofsd",
    "passt": "passt",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "setpriv": "util-linux",
    "unshare": "util-linux",
    "xorriso": "xorriso",
}


def program_says(program: str | Path, option: str) -> str:
    """What `program option` prints on stdout ("" when it cannot be run or
    hangs): how we tell which build of a program we have."""
    try:
        result = subprocess.run(
            [program, option], capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout


def require_program(program: str) -> str:
    """`program`'s path on PATH, or the one-line error naming its package."""
    path = shutil.which(program)
    if path is None:
        raise not_installed(program)
    return path


def not_installed(program: str) -> BootcBoxError:
    package = PACKAGES.get(program)
    return BootcBoxError(
        f"{program} is not installed",
        f"install the {package} package" if package else "install it, or check PATH",
    )


def as_user_error(error: Exception) -> BootcBoxError:
    """What to print, in one line, for an exception no code of ours expected."""
    if isinstance(error, BootcBoxError):
        return error
    if isinstance(error, FileNotFoundError) and isinstance(error.filename, str):
        if "/" not in error.filename:  # a program, looked up on PATH
            return not_installed(error.filename)
        return BootcBoxError(f"{error.filename} does not exist")
    if isinstance(error, subprocess.CalledProcessError):
        program = str(error.cmd[0] if isinstance(error.cmd, list | tuple) else error.cmd)
        output = error.stderr or error.output or b""
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        lines = text.strip().splitlines()
        return BootcBoxError(
            f"{program} failed with status {error.returncode}"
            + (f": {lines[-1]}" if lines else ""),
            "rerun with --debug to see more",
        )
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return BootcBoxError(f"{error.strerror or error}{where}", "rerun with --debug to see more")
    return BootcBoxError(
        f"internal error: {type(error).__name__}: {error}",
        "rerun with --debug and report it with the traceback",
    )
