"""systemd credentials handed to the guest through SMBIOS type 11 strings.

They travel as files (`-smbios type=11,path=FILE`), so nothing secret is
ever on a command line where `ps` would show it.
"""

import base64
import os
from pathlib import Path


def smbios_credential(name: str, value: bytes) -> str:
    """The SMBIOS string systemd reads as credential `name` (systemd.exec(5))."""
    encoded = base64.b64encode(value).decode("ascii")
    return f"io.systemd.credential.binary:{name}={encoded}"


def write_private(path: Path, data: bytes) -> Path:
    """Write a file only its owner can read, created that way (never 0644 first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def write_credential(directory: Path, name: str, value: bytes) -> Path:
    return write_private(directory / f"{name}.smbios", smbios_credential(name, value).encode())


def login_credentials(directory: Path, authorized_key: bytes, tmpfiles: bytes) -> tuple[Path, Path]:
    """What a cold boot hands the guest to log in to it: the public half of
    the key that logs in first (systemd's provisioning puts it in
    /root/.ssh/authorized_keys), and systemd-tmpfiles lines (its host key;
    on a disk also the removal of earlier boots' keys). The one place a
    boot's credentials are written: a saved state's are the same files."""
    return (
        write_credential(directory, "ssh.authorized_keys.root", authorized_key),
        write_credential(directory, "tmpfiles.extra", tmpfiles),
    )
