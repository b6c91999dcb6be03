"""The VM's SSH host key, known before the first login, and how ssh pins it.

A cold boot is handed a host key made on the host, written over the image's
own (every VM of an image would otherwise share the keys baked into it) by a
systemd-tmpfiles credential; a restored guest is given host keys made on the
host by identity.py. Either way ssh checks the key it is shown against the
one bootc-box knows, so a login never goes to another machine that took the
VM's port. An image whose systemd ignores the credential (older than 254)
shows its own key at the first login: that key is learnt then (a warning
says so), and pinned from there on."""

import base64
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootc_box.errors import BootcBoxError

# The name ssh files the key under, whatever host and port the VM has.
HOST_KEY_ALIAS = "bootc-box-vm"
_PUBLIC = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2}")
# An absolute path: ssh runs KnownHostsCommand without a shell or PATH.
ECHO = "/bin/echo"


@dataclass(frozen=True)
class HostKey:
    """An ed25519 host key pair, in OpenSSH's file formats."""

    private: bytes
    public: str  # "ssh-ed25519 BASE64", no comment


def checked_public_key(text: str) -> str:
    """`text` as a host public key bootc-box pins ("ssh-ed25519 BASE64"),
    or an error: the key may come from the cache, which is not ours alone,
    and it ends up in ssh's options."""
    words = text.split()
    key = " ".join(words[:2])
    if not _PUBLIC.fullmatch(key):
        raise BootcBoxError(f"not an ed25519 SSH host key: {key[:40]!r}")
    return key


def make_host_key() -> HostKey:
    with tempfile.TemporaryDirectory(prefix="bootc-box-hostkey-") as tmp:
        path = Path(tmp) / "ssh_host_ed25519_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip
        public = path.with_name(path.name + ".pub").read_text()
        return HostKey(path.read_bytes(), checked_public_key(public))


def host_key_tmpfiles(key: HostKey) -> bytes:
    """systemd-tmpfiles lines (`tmpfiles.extra` credential) that write the
    key over the image's own ed25519 key: `f+` replaces, `~` decodes base64."""

    def line(path: str, mode: str, content: bytes) -> bytes:
        encoded = base64.b64encode(content).decode("ascii")
        return f"f+~ {path} {mode} root root - {encoded}\n".encode()

    return line("/etc/ssh/ssh_host_ed25519_key", "0600", key.private) + line(
        "/etc/ssh/ssh_host_ed25519_key.pub", "0644", (key.public + "\n").encode()
    )


def pinned_options(public: str) -> tuple[tuple[str, str], ...]:
    """ssh_config(5) options that accept only `public` as the VM's key. The
    key is handed over by a command rather than a file, so that the same
    options work wherever they are used (`ssh-config` is read on the host,
    where the box's files are not)."""
    key = checked_public_key(public)
    return (
        ("HostKeyAlias", HOST_KEY_ALIAS),
        ("HostKeyAlgorithms", key.split()[0]),
        ("StrictHostKeyChecking", "yes"),
        ("UserKnownHostsFile", "/dev/null"),
        ("KnownHostsCommand", f"{ECHO} {HOST_KEY_ALIAS} {key}"),
    )


def learning_options(known_hosts: Path) -> tuple[tuple[str, str], ...]:
    """ssh_config(5) options for a first login that learns the VM's key
    into `known_hosts` (an image that ignored the key it was given)."""
    return (
        ("HostKeyAlias", HOST_KEY_ALIAS),
        ("HostKeyAlgorithms", "ssh-ed25519"),
        ("StrictHostKeyChecking", "accept-new"),
        ("UserKnownHostsFile", str(known_hosts)),
        ("HashKnownHosts", "no"),
    )


def find_learnt_key(known_hosts: Path) -> str | None:
    """The key a learning login filed in `known_hosts`, if it got that far."""
    try:
        lines = known_hosts.read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, _, key = line.partition(" ")
        if name == HOST_KEY_ALIAS:
            return checked_public_key(key)
    return None


# What ssh prints (to stderr) when the key it is shown is not the pinned one.
KEY_REFUSED = "Host key verification failed."
