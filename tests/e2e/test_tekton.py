"""The Tekton Task (deploy/tekton/bootc-box-run.yaml), its step run the way
Tekton runs one. There is no cluster here, so podman plays the kubelet: the
step's image with its script as the entrypoint, params substituted into the
step's env, workspaces as volumes at their mountPath, the results directory
at /tekton/results, and /dev/kvm given because the step requests the KVM
device plugin's resource. Everything inside the step is real: the box
boots the fixture and the result is read from the file the step wrote."""

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import BOOT_DEADLINE, BOX, FIXTURE, HOST_STORE, CacheVolume

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "deploy/tekton/bootc-box-run.yaml"
VARIABLE = re.compile(r"\$\((params|results|workspaces)\.([\w-]+)(?:\.(path))?\)")


def substitute(text: str, spec: dict[str, Any], params: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        kind, name, _ = match.groups()
        if kind == "params":
            return params[name]
        if kind == "results":
            return f"/tekton/results/{name}"
        return next(str(w["mountPath"]) for w in spec["workspaces"] if w["name"] == name)

    return VARIABLE.sub(value, text)


def run_task(
    given: dict[str, str], workspaces: dict[str, str], tmp_path: Path
) -> tuple["subprocess.CompletedProcess[str]", dict[str, str]]:
    spec = yaml.safe_load(TASK.read_text())["spec"]
    params = {p["name"]: p["default"] for p in spec["params"] if "default" in p} | given
    assert {p["name"] for p in spec["params"]} <= set(params), "a required param is missing"
    [step] = spec["steps"]
    scripts, results = tmp_path / "scripts", tmp_path / "results"
    scripts.mkdir()
    results.mkdir()
    (scripts / step["name"]).write_text(step["script"])
    (scripts / step["name"]).chmod(0o755)
    argv = ["podman", "run", "--rm", "--entrypoint", f"/tekton/scripts/{step['name']}",
            "-v", f"{scripts}:/tekton/scripts:ro", "-v", f"{results}:/tekton/results"]  # fmt: skip
    if step["computeResources"]["limits"].get("devices.kubevirt.io/kvm"):
        argv += ["--device", "/dev/kvm"]  # what the device plugin does
    for workspace in spec["workspaces"]:
        if workspace["name"] in workspaces:
            mode = ":ro" if workspace.get("readOnly") else ""
            argv += ["-v", f"{workspaces[workspace['name']]}:{workspace['mountPath']}{mode}"]
    for env in step["env"]:
        argv += ["-e", f"{env['name']}={substitute(env['value'], spec, params)}"]
    argv.append(substitute(step["image"], spec, params))
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE
    )
    return result, {p.name: p.read_text() for p in results.iterdir()}


def test_the_step_boots_the_image_and_reports_the_commands_status(
    tmp_path: Path, warm_volume: CacheVolume
) -> None:
    """The cache workspace holds the fixture's saved VM: the step restores it."""
    result, results = run_task(
        {"image": FIXTURE, "box-image": BOX, "command": "uname -s; exit 7"},
        {"cache": warm_volume.name, "images": HOST_STORE.split(":")[0]},
        tmp_path,
    )
    assert result.returncode == 7, result.stderr
    assert results == {"exit-status": "7"}
    assert result.stdout.strip() == "Linux"
    assert "bootc-box: VM up in" in result.stderr
    assert ", restored (" in result.stderr
