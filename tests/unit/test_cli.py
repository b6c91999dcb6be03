"""The command line as a user meets it: a real process, its exit code and stderr."""

import json
import subprocess
import sys

import pytest


def bootc_box(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "bootc_box", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_help_lists_run() -> None:
    result = bootc_box("--help")
    assert result.returncode == 0
    assert "run" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--memory", "lots", "img"], "invalid memory size 'lots'; write it like"),
        (["run", "--memory", "16M", "img"], "too small to boot; give at least 256M"),
        (["run", "oci-archive:/nonexistent.tar"], "/nonexistent.tar does not exist"),
        (["run", "--accel", "hvf", "img"], "Invalid value for '--accel'"),
        (["run"], "Missing argument 'IMAGE'"),
        (["run", "--pull", "sometimes", "img"], "Invalid value for '--pull'"),
        (["pull", "--tls-verify=maybe", "img"], "Invalid value for '--tls-verify'"),
        (["pull", "--cert-dir", "/nonexistent", "x/y"], "--cert-dir /nonexistent does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_125(args: list[str], message: str) -> None:
    result = bootc_box(*args)
    assert result.returncode == 125
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if "Error:" not in result.stderr:  # click's usage errors print their usage line too
        assert len(result.stderr.strip().splitlines()) == 1


def test_doctor_json_is_machine_readable() -> None:
    result = bootc_box("doctor", "--json")
    assert result.returncode in (0, 1)
    names = [check["name"] for check in json.loads(result.stdout)]
    assert "kvm" in names
    assert "privileges" in names
