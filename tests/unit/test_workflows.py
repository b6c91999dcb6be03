"""The workflow, the action and the Tekton Task: what GitHub and Tekton would
run, checked here."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bootc_box.cli import run as run_command
from bootc_box.vms import VM_NAME

ROOT = Path(__file__).resolve().parents[2]
VM_NAME_PATTERN = re.compile(VM_NAME)


def uses_lines() -> list[str]:
    found = []
    for path in [ROOT / "action.yml", *sorted((ROOT / ".github/workflows").glob("*.yml"))]:
        document = yaml.safe_load(path.read_text())
        jobs = document.get("jobs", {}).values() if "jobs" in document else [document["runs"]]
        for job in jobs:
            found += [step["uses"] for step in job.get("steps", []) if "uses" in step]
    return found


def test_third_party_actions_are_pinned_by_commit() -> None:
    """A tag can be moved to other code; a commit cannot."""
    pinned = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
    others = [u for u in uses_lines() if not u.startswith("./")]
    assert others
    assert [u for u in others if not pinned.fullmatch(u)] == []


def setup_step(tmp_path: Path, **inputs: str) -> "subprocess.CompletedProcess[str]":
    env = {
        "PATH": "/usr/bin:/bin",
        "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "RUNNER_TEMP": str(tmp_path),
        "INPUT_IMAGE": "", "INPUT_MODE": "run", "INPUT_NAME": "vm",
        "INPUT_BOX_IMAGE": "", "INPUT_CACHE": "true",
        **inputs,
    }  # fmt: skip
    return subprocess.run(
        ["bash", str(ROOT / "action/setup")], env=env, capture_output=True, text=True, check=False
    )


def test_the_action_refuses_a_mode_it_does_not_have(tmp_path: Path) -> None:
    result = setup_step(tmp_path, INPUT_MODE="restart", INPUT_IMAGE="img")
    assert result.returncode == 1
    assert result.stdout == (
        "::error title=bootc-box::mode must be run, start or stop, not 'restart'\n"
    )


def test_the_action_needs_an_image_to_boot(tmp_path: Path) -> None:
    result = setup_step(tmp_path, INPUT_MODE="start")
    assert result.returncode == 1
    assert (
        result.stdout
        == "::error title=bootc-box::the input 'image' names the bootc image to boot\n"
    )


def cache_mode(given: str, private: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["bash", "-c", f'source "{ROOT}/action/lib.bash"; cache_mode "$1" "$2"', "sh", given,
         private], capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given", "private", "kept"),
    [("auto", "true", "true"), ("auto", "false", "images"), ("auto", "", "images"),
     ("true", "false", "true"), ("images", "true", "images"), ("false", "true", "false")],
)  # fmt: skip
def test_saved_states_are_cached_by_default_only_in_private_repositories(
    given: str, private: str, kept: str
) -> None:
    """A public repository's caches are readable by pull requests from forks:
    by default they get no guest memory and no bootstrap key."""
    assert cache_mode(given, private).stdout == f"{kept}\n"


def test_an_unknown_cache_input_is_refused() -> None:
    result = cache_mode("yes", "true")
    assert result.returncode == 1
    assert result.stderr == (
        "::error title=bootc-box::the input 'cache' must be auto, true, images or false,"
        " not 'yes'\n"
    )


def warm_mode(given: str, source: str, cache: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["bash", "-c", f'source "{ROOT}/action/lib.bash"; warm_mode "$1" "$2" "$3"', "sh",
         given, source, cache], capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given", "source", "cache", "warm"),
    [("auto", "registry", "true", "always"), ("auto", "registry", "images", "auto"),
     ("auto", "local", "true", "auto"), ("always", "local", "images", "always"),
     ("never", "registry", "true", "never")],
)  # fmt: skip
def test_a_pulled_image_is_saved_at_once_when_the_cache_keeps_it(
    given: str, source: str, cache: str, warm: str
) -> None:
    """A later job restores a pulled image's state from the cache, when the
    cache keeps saved states; no later job boots an image this workflow built."""
    assert warm_mode(given, source, cache).stdout == f"{warm}\n"


def test_an_unknown_warm_input_is_refused(tmp_path: Path) -> None:
    result = setup_step(tmp_path, INPUT_IMAGE="img", INPUT_WARM="sometimes")
    assert result.returncode == 1
    assert result.stderr == (
        "::error title=bootc-box::the input 'warm' must be auto, always or never, not 'sometimes'\n"
    )


def test_the_cache_input_defaults_to_auto() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["inputs"]["cache"]["default"] == "auto"


NAME_ERROR = "::error title=bootc-box::the input 'name' must be"


@pytest.mark.parametrize(
    "name", ["vm", "web.1_a-b", "a" * 63, "../../x", "a/b", "-x", ".x", "", "a" * 64, "a b"]
)
def test_the_action_takes_the_names_bootc_box_takes(tmp_path: Path, name: str) -> None:
    # The name goes into paths on the runner: ../../x would leave RUNNER_TEMP.
    # A valid one passes on to the next check (here the mode, which fails).
    result = setup_step(tmp_path, INPUT_NAME=name, INPUT_MODE="restart")
    assert result.returncode == 1
    valid = VM_NAME_PATTERN.fullmatch(name) is not None
    assert result.stdout.startswith(NAME_ERROR) is not valid, result.stdout
    assert result.stdout.count("\n") == 1


def test_each_step_checks_the_name_before_it_uses_it(tmp_path: Path) -> None:
    # A stand-in podman: the step must stop before it would run it.
    (tmp_path / "podman").write_text("#!/bin/sh\necho podman ran; exit 99\n")
    (tmp_path / "podman").chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin", "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_OUTPUT": str(tmp_path / "output"), "INPUT_MODE": "stop",
        "INPUT_NAME": "../../x", "INPUT_CACHE_VOLUME": "bootc-box", "STATE_DIR": str(tmp_path),
    }  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "action/boot")], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stdout.startswith(NAME_ERROR)
    assert "podman ran" not in result.stdout


def tekton_step_argv(tmp_path: Path, **params: str) -> list[str]:
    """The arguments the Task's step hands bootc-box, for these params."""
    step = yaml.safe_load((ROOT / "deploy/tekton/bootc-box-run.yaml").read_text())["spec"]
    script = step["steps"][0]["script"]
    stub = tmp_path / "entrypoint"
    stub.write_text('#!/bin/sh\nprintf \'%s\\0\' "$@" >"$ARGS"\n')
    stub.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin", "ARGS": str(tmp_path / "args"), "RESULT": str(tmp_path / "r"),
        "IMAGE": "img", "COMMAND": "true", "MEMORY": "2G", "CPUS": "2", **params,
    }  # fmt: skip
    script = script.replace("/usr/libexec/bootc-box/entrypoint", str(stub))
    subprocess.run(["bash", "-c", script], env=env, check=True)
    return (tmp_path / "args").read_text().split("\0")[:-1]


def test_the_tekton_image_param_is_an_image_whatever_it_looks_like(tmp_path: Path) -> None:
    argv = tekton_step_argv(tmp_path, IMAGE="--bind=/:/x", COMMAND="cat /x/etc/shadow")
    assert argv[0] == "run"
    params = run_command.make_context("run", argv[1:]).params
    assert params["binds"] == ()
    assert params["image"] == "--bind=/:/x"
    assert params["command"] == ("--", "sh", "-c", "cat /x/etc/shadow")


def with_boot_functions(
    tmp_path: Path, script: str, stdin: str = ""
) -> "subprocess.CompletedProcess[str]":
    """`script` run with the functions of the action's main step, whose mode
    is not run (podman and sudo would fail if anything reached them)."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name in ("podman", "sudo"):
        (stubs / name).write_text("#!/bin/sh\necho not here >&2\nexit 99\n")
        (stubs / name).chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
        "STATE_DIR": str(tmp_path),
        "INPUT_IMAGE": "img", "INPUT_MODE": "none", "INPUT_NAME": "vm",
        "INPUT_CACHE_VOLUME": "bootc-box",
    }  # fmt: skip
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {ROOT}/action/boot; {script}"],
        input=stdin, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


FORGED = "bootc-box: VM up in 0 s, said the guest\n"


def test_the_step_summary_says_what_bootc_box_recorded_not_what_the_guest_printed(
    tmp_path: Path,
) -> None:
    (tmp_path / "console.log").write_text(FORGED)
    (tmp_path / "vm-up").write_text("VM up in 33 s, cold (pull 0 s, boot 31 s)\n")
    result = with_boot_functions(tmp_path, "summary 0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "step-summary.md").read_text() == (
        "- bootc-box `img` (none): exit status 0; VM up in 33 s, cold (pull 0 s, boot 31 s)\n"
    )


def test_a_vm_that_never_came_up_has_no_time_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text(FORGED)
    result = with_boot_functions(tmp_path, "summary 125")
    assert result.returncode == 0, result.stderr
    assert (
        tmp_path / "step-summary.md"
    ).read_text() == "- bootc-box `img` (none): exit status 125\n"


def shown_boot(tmp_path: Path, stderr: str) -> list[str]:
    result = with_boot_functions(tmp_path, "show_boot", stderr)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "console.log").read_text() == stderr  # all of it is kept
    return result.stdout.splitlines()


def test_a_forged_vm_up_line_neither_ends_the_boot_group_nor_turns_commands_back_on(
    tmp_path: Path,
) -> None:
    lines = shown_boot(tmp_path, f"booting\n{FORGED}::warning::from the guest\n")
    token = lines[1].removeprefix("::stop-commands::")
    assert lines == [
        "::group::Boot img", f"::stop-commands::{token}",
        "booting", FORGED.strip(), "::warning::from the guest",
        f"::{token}::", "::endgroup::",
    ]  # fmt: skip


def test_bootc_box_s_own_vm_up_line_ends_the_boot_group(tmp_path: Path) -> None:
    (tmp_path / "vm-up").write_text("VM up in 33 s, cold (boot 31 s)\n")
    lines = shown_boot(
        tmp_path,
        "booting\nbootc-box: VM up in 33 s, cold (boot 31 s)\n"
        "the guest, later\nbootc-box: Powering the VM off\n",
    )
    token = lines[1].removeprefix("::stop-commands::")
    assert lines == [
        "::group::Boot img", f"::stop-commands::{token}",
        "booting", "bootc-box: VM up in 33 s, cold (boot 31 s)",
        f"::{token}::", "::endgroup::", "bootc-box: Powering the VM off",
    ]  # fmt: skip
