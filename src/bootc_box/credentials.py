"""systemd credentials handed to the guest through SMBIOS type 11 strings.

They travel as files (`-smbios type=11,path=FILE`), so nothing secret is
ever on a command line where `ps` would show it.
"""

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from bootc_box.hostkeys import host_key_tmpfiles, make_host_key
from bootc_box.ssh import generate_key, public_key


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


# A disk keeps /root/.ssh/authorized_keys from its first boot, and systemd's
# provisioning (`f^` in tmpfiles.d/provision.conf) never overwrites it: the
# next run's key would be refused. systemd-tmpfiles removes before it
# creates, so this line lets every boot write the file from its own credential.
FORGET_OLD_KEYS = b"r /root/.ssh/authorized_keys\n"


@dataclass(frozen=True)
class Login:
    """How a guest is first logged in to: the private key it lets in, the
    credential files that tell it so and give it its host key, and the
    public half of that host key, which the first login checks."""

    key: Path
    credentials: tuple[Path, ...]
    host_key: str


def new_login(directory: Path, key: Path | None = None, *, forget_old_keys: bool = False) -> Login:
    """A login for a cold boot, its files in `directory`: `key` (else a new
    one there) and a new host key; on a disk, also the removal of the keys
    earlier boots left."""
    key = key or generate_key(directory)
    host_key = make_host_key()
    tmpfiles = (FORGET_OLD_KEYS if forget_old_keys else b"") + host_key_tmpfiles(host_key)
    return Login(key, login_credentials(directory, public_key(key), tmpfiles), host_key.public)
