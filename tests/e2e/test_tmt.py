"""tmt's `provision how: bootc-box`: the example plan (examples/tmt) run by
tmt from PyPI against the fixture, in a box on the session's volume, so the
VM is restored from the session's saved state as a user's second run would
be; and what tmt says when bootc-box cannot run."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import FIXTURE, CacheVolume, podman

PLAN = Path(__file__).parents[2] / "examples/tmt"
TMT = Path(sys.executable).with_name("tmt")


def tmt_run(run: Path, *provision: str) -> "subprocess.CompletedProcess[str]":
    # --skip prepare: a bootc image brings what its tests need (README).
    return subprocess.run(
        [TMT, "--root", PLAN, "run", "--id", run, "-vv", "--all", "--skip", "prepare",
         "provision", "--how", "bootc-box", *provision],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


def tmt_boxes() -> list[str]:
    return podman("ps", "-a", "--filter", "name=^tmt-bootc-box-", "--format", "{{.Names}}").split()


def test_the_example_plan_runs_and_its_failing_test_is_a_failure(
    warm_volume: CacheVolume, tmt_run_dir: Path
) -> None:
    result = tmt_run(tmt_run_dir, "--cache-volume", warm_volume.name)
    said = result.stdout + result.stderr
    assert result.returncode == 1, said  # tmt's status: some test failed
    assert "total: 2 tests passed and 1 test failed" in said
    for outcome, test in (("pass", "marker"), ("pass", "reboot"), ("fail", "fails")):
        assert f"{outcome} /tests/{test}" in said
    (output,) = tmt_run_dir.glob("plans/execute/data/guest/default-0/tests/fails-*/output.txt")
    assert "this test fails on purpose" in output.read_text()
    (reboot,) = tmt_run_dir.glob("plans/execute/data/guest/default-0/tests/reboot-*/output.txt")
    assert "boot 1: " in reboot.read_text()
    log = (tmt_run_dir / "log.txt").read_text()
    # On a short path, tmt would use an SSH master connection, and lose
    # 30 s waiting for it to start: the plugin turns that off.
    assert "Spawning the SSH master process" not in log
    # ssh takes the first value of an option: the VM's pinned host key
    # comes before tmt's defaults, which would check none.
    ssh_line = next(line for line in log.splitlines() if "HostKeyAlias=bootc-box-vm" in line)
    assert ssh_line.index("StrictHostKeyChecking=yes") < ssh_line.index("StrictHostKeyChecking=no")
    # Restored from the session's saved state, as a user's second run is.
    assert ", restored (" in next(line for line in said.splitlines() if "VM up in" in line)
    assert tmt_boxes() == []


@pytest.mark.parametrize(
    ("provision", "message"),
    [
        # The plan names an image: an empty one on the command line replaces it.
        (("--image", ""), "bootc-box: provision how: bootc-box needs an image: give image: IMAGE"),
        (("--image", FIXTURE, "--cloud-init", "/nowhere/seed"),
         "bootc-box: /nowhere/seed does not exist; check the path in the plan"),
        (("--image", FIXTURE, "--box-image", "localhost/no-such-box:latest"),
         "bootc-box could not boot localhost/bootc-box-fixture:latest; what it said last:"),
    ],
    ids=["no-image", "missing-input", "box-cannot-start"],
)  # fmt: skip
def test_what_bootc_box_cannot_run_is_tmts_error_with_one_line_why(
    provision: tuple[str, ...], message: str, tmt_run_dir: Path
) -> None:
    result = tmt_run(tmt_run_dir, *provision)
    assert result.returncode == 2, result.stdout + result.stderr  # tmt's status: an error
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert tmt_boxes() == []
