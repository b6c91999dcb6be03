"""Runs the composite action in action.yml the way a GitHub runner would, as
far as that can be real here: there is no runner and no GitHub, so the
steps that `uses:` GitHub's own actions (cache, artifact upload) are skipped
and reported, and every `run:` step is run in order with bash, with the
environment GitHub gives a step: its `env:` with the expressions filled in,
GITHUB_OUTPUT (a new file per step), GITHUB_STEP_SUMMARY, GITHUB_ACTION_PATH
and RUNNER_TEMP. An expression this runner does not know fails the run,
so the action cannot outgrow what its tests execute."""

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class ActionRun:
    outputs: dict[str, str]
    stdout: str
    summary: str
    skipped: list[str]
    failed: bool
    step_outputs: dict[str, dict[str, str]] = field(default_factory=dict)


def read_outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def evaluate(text: str, inputs: dict[str, str], steps: dict[str, dict[str, str]]) -> str:
    def value(match: re.Match[str]) -> str:
        expression = match[1]
        if expression.startswith("inputs."):
            return inputs[expression.removeprefix("inputs.")]
        if m := re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression):
            return steps.get(m[1], {}).get(m[2], "")
        if expression in ("github.action_repository", "github.action_ref"):
            return ""  # used as `uses: ./`, as in this repository's workflow
        if expression == "github.event.repository.private":
            return "false"  # as for this repository, a public one
        raise AssertionError(f"this runner cannot evaluate ${{{{ {expression} }}}}")

    return EXPRESSION.sub(value, text)


def run_action(given: dict[str, str], runner_temp: Path) -> ActionRun:
    action: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    unknown = set(given) - set(action["inputs"])
    assert not unknown, f"action.yml has no inputs {unknown}"
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs.update(given)
    summary = runner_temp / "step-summary.md"
    summary.touch()
    steps: dict[str, dict[str, str]] = {}
    stdout, skipped, failed = [], [], False
    for number, step in enumerate(action["runs"]["steps"]):
        condition = str(step.get("if", ""))
        if "uses" in step:
            skipped.append(step["uses"].split("@")[0])
            continue
        if failed and condition != "always()":
            continue
        assert condition in ("", "always()"), f"this runner cannot evaluate if: {condition}"
        output = runner_temp / f"output-{number}"
        output.touch()
        step_env = {
            **os.environ,
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ACTION_PATH": str(ROOT),
            "RUNNER_TEMP": str(runner_temp),
            "RUNNER_OS": "Linux",
            **{k: evaluate(str(v), inputs, steps) for k, v in step.get("env", {}).items()},
        }
        script = runner_temp / f"step-{number}.sh"
        script.write_text(evaluate(step["run"], inputs, steps))
        # GitHub's own way to run a `shell: bash` step.
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env=step_env, capture_output=True, text=True, check=False, timeout=1200,
        )  # fmt: skip
        stdout.append(result.stdout + result.stderr)
        steps[step.get("id", f"step-{number}")] = read_outputs(output)
        failed = failed or result.returncode != 0
    outputs = {
        name: evaluate(spec["value"], inputs, steps) for name, spec in action["outputs"].items()
    }
    return ActionRun(outputs, "".join(stdout), summary.read_text(), skipped, failed, steps)
