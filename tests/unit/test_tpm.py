"""swtpm's command line and its state directory; swtpm itself runs in the
e2e tests (the box has it)."""

import stat
from pathlib import Path

import pytest

from bootc_box.doctor import tpm_check
from bootc_box.errors import BootcBoxError
from bootc_box.tpm import TpmSpec, check_state_dir, swtpm_argv


def test_swtpm_serves_a_tpm2_from_its_state_on_a_private_socket() -> None:
    tpm = TpmSpec(Path("/vm/tpm"), Path("/vm/b/swtpm.sock"))
    argv = swtpm_argv(Path("/usr/bin/swtpm"), tpm, Path("/vm/b/swtpm.log"))
    assert argv[:3] == ["/usr/bin/swtpm", "socket", "--tpm2"]

    def value(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert value("--tpmstate") == "dir=/vm/tpm,mode=0600"
    assert value("--ctrl") == "type=unixio,path=/vm/b/swtpm.sock,mode=0600"
    assert value("--seccomp") == "action=kill"
    assert value("--log") == "file=/vm/b/swtpm.log,level=1"
    # No --terminate: bootc-box stops it, after QEMU, like virtiofsd.
    assert "--terminate" not in argv


def test_the_state_directory_is_made_private_and_never_reached_through_a_link(
    tmp_path: Path,
) -> None:
    state = tmp_path / "tpm"
    check_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    check_state_dir(state)  # a kept VM's, the next time
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "planted"
    planted.symlink_to(elsewhere)
    with pytest.raises(BootcBoxError, match="is not what swtpm left there"):
        check_state_dir(planted)
    # Nor a link in its place of one of swtpm's files, which it would write through.
    (state / "tpm2-00.permall").write_bytes(b"state")
    check_state_dir(state)
    (state / "tpm2-00.volatilestate").symlink_to(tmp_path / "victim")
    with pytest.raises(BootcBoxError, match="is not what swtpm left there"):
        check_state_dir(state)
    (tmp_path / "file").write_text("")
    with pytest.raises(BootcBoxError):
        check_state_dir(tmp_path / "file")


def test_doctor_names_the_package() -> None:
    missing = tpm_check(None)
    assert (missing.ok, missing.required) == (False, False)
    assert missing.fix == "install the swtpm package"
    assert tpm_check(Path("/usr/bin/swtpm")).ok
