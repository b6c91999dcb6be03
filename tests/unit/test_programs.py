import subprocess
from pathlib import Path

from bootc_box.environment import Environment, probe_checks
from bootc_box.errors import BootcBoxError
from bootc_box.programs import PACKAGES, as_user_error


def test_a_missing_program_names_its_package() -> None:
    error = as_user_error(FileNotFoundError(2, "No such file or directory", "ssh-keygen"))
    assert str(error) == "ssh-keygen is not installed; install the openssh-client package"


def test_a_failed_program_shows_its_last_words() -> None:
    failed = subprocess.CalledProcessError(
        1, ["ssh-keygen", "-y"], stderr=b"Load key: invalid format\nincorrect passphrase\n"
    )
    assert str(as_user_error(failed)) == (
        "ssh-keygen failed with status 1: incorrect passphrase; rerun with --debug to see more"
    )


def test_anything_else_is_one_line_that_asks_for_a_report() -> None:
    message = str(as_user_error(KeyError("vm.json")))
    assert message.startswith("internal error: KeyError: 'vm.json'; rerun with --debug")
    assert "\n" not in message
    ours = BootcBoxError("x", "y")
    assert as_user_error(ours) is ours


def test_doctor_checks_every_program_bootc_box_runs() -> None:
    checks = {c.name: c for c in probe_checks(Environment(in_box=False), Path("/v/virtiofsd"))}
    assert set(PACKAGES) <= set(checks)
    assert checks["virtiofsd"].detail == "/v/virtiofsd"
