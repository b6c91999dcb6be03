"""The command line as a user meets it: a real process, its exit code and stderr."""

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bootc_box import __version__
from bootc_box.cli import cli


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
        "cache", "completion", "cp", "doctor", "images", "inspect", "list", "logs", "pull",
        "rm", "run", "ssh", "ssh-config", "start", "stop", "to-disk",
    ]  # fmt: skip
    assert any(line.split()[1:3] == ["Boot", "IMAGE"] for line in commands)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--memory", "lots", "img"],
            "invalid --memory 'lots'; write it like --memory 2048",
        ),
        (["run", "--memory", "16M", "img"], "too small to boot; give at least --memory 256M"),
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


def command_paths() -> list[list[str]]:
    """Every command and subcommand, as the words that name it."""
    paths = []
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in command.commands]
        else:
            paths.append([name])
    return paths


@pytest.mark.parametrize("words", command_paths(), ids=" ".join)
def test_every_help_shows_an_example_that_uses_the_command(words: list[str]) -> None:
    result = bootc_box(*words, "--help")
    assert result.returncode == 0, result.stderr
    examples = result.stdout.split("Example", 1)[1].splitlines()[1:]
    assert any(f"bootc-box {' '.join(words)}" in line for line in examples) or words == ["doctor"]
    assert any(" doctor" in line for line in examples) or words != ["doctor"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--cpus", "0", "img"],
            "Invalid value for '--cpus': 0 is not in the range x>=1; see bootc-box run --help",
        ),
        (
            ["completion", "tcsh"],
            "'tcsh' is not one of 'bash', 'zsh', 'fish'; see bootc-box completion --help",
        ),
        (["cp", "a"], "Missing argument 'DST'; see bootc-box cp --help"),
        (["cp", "a", "b"], "one of SRC and DST must be in a VM"),
        (["nosuch"], "No such command 'nosuch'; see bootc-box --help"),
        (["run"], "Missing argument 'IMAGE'; see bootc-box run --help"),
        (["run", "--transient", "img"], "--transient applies to a disk; add --disk FILE"),
        (["run", "--format", "raw", "img"], "--format applies to a disk; add --disk FILE"),
        (
            ["run", "--disk", "d.img", "--format", "vmdk"],
            "'vmdk' is not one of 'raw', 'qcow2'; see bootc-box run --help",
        ),
        (["run", "--persistent", "img"], "--persistent needs --name NAME"),
        (["run", "--persistent", "--name", "a", "--disk", "d.raw"], "takes an IMAGE, not --disk"),
        (
            ["run", "--tls-verify", "false", "img", "--", "true"],
            "--tls-verify takes its value after '=': --tls-verify false would mean "
            "--tls-verify=true and take 'false' for IMAGE; write --tls-verify=false",
        ),
        (["pull", "--tls-verify", "False", "img"], "write --tls-verify=false"),
        (
            ["run", "--debug", "img"],
            "--debug goes before the command: bootc-box --debug COMMAND ...",
        ),
        (["to-disk", "--root-size", "10X", "img", "out"], "invalid --root-size '10X'"),
        (
            ["run", "--memroy", "2G", "img"],
            "No such option --memroy (did you mean --memory?); see bootc-box run --help",
        ),
        (
            ["completion"],
            "Missing argument 'SHELL'. Choose from: bash, zsh, fish; see bootc-box completion",
        ),
        (["start"], "Missing argument 'NAMES...'; see bootc-box start --help"),
        (["start", "-a", "a", "b"], "--attach takes one NAME"),
        (
            ["to-disk", "--format", "vmdk", "img", "out"],
            "'vmdk' is not one of 'raw', 'qcow2'; see bootc-box to-disk --help",
        ),
        (
            ["to-disk", "--filesystem", "zfs", "img", "out"],
            "'zfs' is not one of 'ext4', 'xfs', 'btrfs'; see bootc-box to-disk --help",
        ),
        (["to-disk", "img"], "Missing argument 'OUTPUT'; see bootc-box to-disk --help"),
        (["to-disk", "--disk-size", "lots", "img", "out"], "invalid --disk-size 'lots'"),
    ],
)
def test_usage_errors_are_one_line_naming_where_help_is(args: list[str], message: str) -> None:
    result = bootc_box(*args)
    assert result.returncode == 125
    assert result.stderr.startswith("bootc-box: error: ")
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_version_is_the_package_version() -> None:
    result = bootc_box("--version")
    assert result.returncode == 0
    assert result.stdout == f"bootc-box, version {__version__}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_call_back_into_bootc_box(shell: str) -> None:
    result = bootc_box("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_BOOTC_BOX_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_bash_loads_the_completion_and_completes_commands(tmp_path: Path) -> None:
    """The script as bash sources it, and the answers it then asks for."""
    script = tmp_path / "bootc-box.bash"
    script.write_text(bootc_box("completion", "bash").stdout)
    loaded = subprocess.run(
        ["bash", "-c", f"source {script}; complete -p bootc-box"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "-F _bootc_box_completion bootc-box" in loaded.stdout
    env = dict(os.environ, COMP_WORDS="bootc-box ss", COMP_CWORD="1",
               _BOOTC_BOX_COMPLETE="bash_complete")  # fmt: skip
    answer = subprocess.run(
        [sys.executable, "-m", "bootc_box"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.stdout.split() == ["plain,ssh", "plain,ssh-config"]


def test_ssh_config_with_no_vm_says_so(tmp_path: Path) -> None:
    """Nothing printed and status 0 would write an empty ssh_config file."""
    result = subprocess.run(
        [sys.executable, "-m", "bootc_box", "ssh-config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path)),
    )
    assert result.returncode == 125
    assert result.stdout == ""
    assert result.stderr.startswith("bootc-box: error: no VM here answers SSH yet; start one")


def readme_option_rows(header: str) -> list[tuple[list[str], str]]:
    """The options (and their documented default) of the README table that
    starts with `header`."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = text[text.index(header) :].splitlines()[2:]
    rows = []
    for line in itertools.takewhile(lambda line: line.startswith("|"), lines):
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows.append((re.findall(r"`(-[-\w]+)", cells[0]), cells[-1]))
    return rows


def test_every_run_option_the_readme_documents_exists_with_its_default() -> None:
    run = cli.commands["run"]
    params = {name: p for p in (*run.params, *cli.params) for name in (*p.opts, *p.secondary_opts)}
    rows = readme_option_rows("| option | meaning | default |")
    assert len(rows) > 20
    for names, default in rows:
        for name in names:
            assert name in params, f"README documents {name}, which run does not have"
            literal = re.fullmatch(r"`([^`]+)`", default)
            value = params[name].default
            if literal and isinstance(value, str | int) and not isinstance(value, bool):
                assert str(value) == literal[1], f"{name}: README says {default}"
    documented = {name for names, _ in rows for name in names}
    options = [p for p in run.params if isinstance(p, click.Option) and not p.hidden]
    assert [p.opts[0] for p in options if p.opts[0] not in documented] == []
