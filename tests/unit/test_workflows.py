"""The workflow and the action: what GitHub would run, checked here."""

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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
