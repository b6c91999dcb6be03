"""The command line as a user meets it: a real process, its exit code and stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def bootc_box(*args: str, path: str | None = None) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PATH=path) if path is not None else None
    return subprocess.run(
        [sys.executable, "-m", "bootc_box", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def test_help_lists_every_command_with_its_summary() -> None:
    result = bootc_box("--help")
    assert result.returncode == 0
    commands = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == [
        "cache", "doctor", "inspect", "list", "logs", "pull", "rm", "run", "ssh", "stop"
    ]  # fmt: skip
    assert any(line.split()[1:3] == ["Boot", "IMAGE"] for line in commands)


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


def test_doctor_json_is_machine_readable_and_its_status_follows_the_checks() -> None:
    result = bootc_box("doctor", "--json")
    checks = json.loads(result.stdout)
    names = [check["name"] for check in checks]
    assert "kvm" in names
    assert "privileges" in names
    missing = [c["name"] for c in checks if c["required"] and not c["ok"]]
    assert result.returncode == (1 if missing else 0), missing


def test_doctor_fails_when_a_required_program_is_missing(tmp_path: Path) -> None:
    result = bootc_box("doctor", "--json", path=str(tmp_path))
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 1
    assert checks["podman"] == {
        "name": "podman", "ok": False, "detail": "not found",
        "fix": "install the podman package", "required": True,
    }  # fmt: skip


def test_without_podman_a_command_fails_in_one_line_naming_the_package(tmp_path: Path) -> None:
    result = bootc_box("pull", "example.org/img", path=str(tmp_path))
    assert result.returncode == 125
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "bootc-box: error: podman is not installed; install the podman package"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = bootc_box("--debug", "pull", "example.org/img", path=str(tmp_path))
    assert result.returncode == 125
    assert "Traceback" in result.stderr
    assert result.stderr.endswith("podman is not installed; install the podman package\n")
