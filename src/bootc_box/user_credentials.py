"""The user's systemd credentials for the guest (--set-credential,
--load-credential, as systemd-vmspawn names them): parsed, checked, and
written as the SMBIOS files QEMU hands over (credentials.py), so that no
value is ever on a command line."""

import codecs
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.credentials import smbios_credential, write_private
from bootc_box.errors import BootcBoxError

# The credentials bootc-box itself gives every boot (credentials.py): a
# user's would be ignored by systemd, or would undo the login.
OWN_CREDENTIALS = (
    "ssh.authorized_keys.root",
    "tmpfiles.extra",
    # serial_exec.py's, for images without sshd.
    "bootc-box.exec",
    "systemd.extra-unit.bootc-box-exec.service",
)
# systemd's CREDENTIAL_SIZE_MAX is 1 MiB; SMBIOS tables hold all of them,
# so the whole is kept well below what firmware copies.
CREDENTIAL_MAX = 1 << 20
CREDENTIALS_MAX = 4 << 20


@dataclass(frozen=True)
class Credential:
    name: str
    value: bytes = field(repr=False)  # may be a secret: never in a log line


def check_credential_name(name: str, option: str) -> str:
    """A credential ID systemd takes (a file name), and not one of bootc-box's."""
    if not name or name in (".", "..") or "/" in name or len(name.encode()) > 255:
        raise BootcBoxError(
            f"invalid credential ID {name!r} in {option}",
            "an ID is a file name: no '/', at most 255 bytes, e.g. --set-credential app.key:VALUE",
        )
    if name in OWN_CREDENTIALS:
        raise BootcBoxError(
            f"{option} sets {name}, which bootc-box sets itself for its login",
            "give your key with --ssh-key, and tmpfiles lines in a unit (--systemd-units)",
        )
    return name


def _split(text: str, option: str, what: str) -> tuple[str, str]:
    name, colon, rest = text.partition(":")
    if not colon:
        raise BootcBoxError(
            f"{option} {text!r} has no {what}", f"write it as {option} ID:{what.upper()}"
        )
    return check_credential_name(name, option), rest


def parse_set_credential(text: str) -> Credential:
    """--set-credential ID:VALUE; VALUE may hold C escapes (\\n, \\x00), as
    systemd-vmspawn reads it."""
    name, value = _split(text, "--set-credential", "value")
    try:
        data = codecs.escape_decode(value.encode())[0]
    except ValueError as e:
        raise BootcBoxError(
            f"--set-credential {name}: its value has a broken escape ({e})",
            "write a backslash as \\\\",
        ) from None
    return Credential(name, checked_size(name, data))


def parse_load_credential(text: str, cwd: Path) -> Credential:
    """--load-credential ID:PATH: the file's bytes, read now."""
    name, path = _split(text, "--load-credential", "path")
    file = cwd / path
    try:
        with file.open("rb") as f:
            data = f.read(CREDENTIAL_MAX + 1)
    except OSError as e:
        raise BootcBoxError(
            f"--load-credential {name}: cannot read {file}: {e.strerror}",
            "check the path (in the box, mount its directory with -v)",
        ) from None
    return Credential(name, checked_size(name, data))


def checked_size(name: str, data: bytes) -> bytes:
    if len(data) > CREDENTIAL_MAX:
        raise BootcBoxError(
            f"credential {name} is larger than {CREDENTIAL_MAX >> 20} MiB, systemd's limit",
            "pass a smaller file, or share the data with --bind",
        )
    return data


def check_credentials(credentials: tuple[Credential, ...]) -> tuple[Credential, ...]:
    names = [c.name for c in credentials]
    for name in names:
        if names.count(name) > 1:
            raise BootcBoxError(f"credential {name} is given twice", "give each ID once")
    if sum(len(c.value) for c in credentials) > CREDENTIALS_MAX:
        raise BootcBoxError(
            f"the credentials add up to more than {CREDENTIALS_MAX >> 20} MiB",
            "share large data with --bind instead",
        )
    return credentials


def write_credentials(directory: Path, credentials: tuple[Credential, ...]) -> tuple[Path, ...]:
    """The credentials as SMBIOS files in `directory`, readable by their owner only."""
    directory.mkdir(mode=0o700)
    # Numbered: an ID with its prefix may be longer than a file name may be.
    return tuple(
        write_private(directory / f"{i}.smbios", smbios_credential(c.name, c.value).encode())
        for i, c in enumerate(credentials)
    )
