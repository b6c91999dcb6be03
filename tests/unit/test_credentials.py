import base64
import stat
from pathlib import Path

from bootc_box.credentials import smbios_credential, write_credential


def test_smbios_string_is_base64_binary_credential() -> None:
    value = b"ssh-ed25519 AAAA key\n"
    text = smbios_credential("ssh.authorized_keys.root", value)
    prefix = "io.systemd.credential.binary:ssh.authorized_keys.root="
    assert text.startswith(prefix)
    assert base64.b64decode(text[len(prefix) :]) == value


def test_credential_file_is_private_and_holds_the_smbios_string(tmp_path: Path) -> None:
    path = write_credential(tmp_path, "x.y", b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == smbios_credential("x.y", b"secret")
