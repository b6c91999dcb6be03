"""What a restored VM is given to become its own machine."""

import io
import subprocess
import tarfile

from bootc_box.identity import GUEST_SCRIPT, new_host_keys


def test_new_host_keys_are_root_owned_with_private_halves_for_root_alone() -> None:
    keys = new_host_keys()
    with tarfile.open(fileobj=io.BytesIO(keys.tar)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        public = tar.extractfile("ssh_host_ed25519_key.pub")
        assert public is not None
        # What ssh then pins is the key the guest is given.
        assert public.read().decode().startswith(keys.ed25519 + " ")
    assert sorted(members) == sorted(
        f"ssh_host_{kind}_key{suffix}" for kind in ("rsa", "ecdsa", "ed25519")
        for suffix in ("", ".pub")
    )  # fmt: skip
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["ssh_host_ed25519_key"].mode & 0o777 == 0o600


def test_two_calls_make_different_keys() -> None:
    assert new_host_keys() != new_host_keys()


def test_the_guest_script_is_posix_sh() -> None:
    """The guest may have no bash: dash, as Debian's /bin/sh, checks it."""
    result = subprocess.run(
        ["dash", "-n"], input=GUEST_SCRIPT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
