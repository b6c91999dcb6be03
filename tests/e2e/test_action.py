"""The GitHub Action (action.yml), its steps run in order as a runner runs
them (tests/e2e/actions.py). There is no GitHub here: its cache and
artifact steps are skipped, and where actions/cache would restore the cache
file in a later job, the test leaves the file where the action saved it."""

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.actions import run_action
from tests.e2e.conftest import BOX, FIXTURE, ROOT, podman

GITHUB_STEPS = ["actions/cache/restore", "actions/cache/save", "actions/upload-artifact"]


@pytest.fixture(scope="module")
def runner_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One job's RUNNER_TEMP, shared by the tests in order."""
    return tmp_path_factory.mktemp("runner-temp")


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"bootc-box-test-action-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["podman", "volume", "rm", "--force", name], capture_output=True, check=True)


def test_run_mode_runs_the_command_folds_the_boot_and_saves_the_cache(
    runner_temp: Path, volume: str
) -> None:
    run = run_action(
        {"image": FIXTURE, "box-image": BOX, "command": "echo hello from $(uname -n)",
         "cache-volume": volume, "cache": "true", "warm": "always"},
        runner_temp,
    )  # fmt: skip
    assert not run.failed, run.stdout
    assert run.skipped == GITHUB_STEPS
    assert run.outputs["exit-status"] == "0"
    assert "hello from vm" in run.stdout
    boot = run.stdout.split("::group::Boot localhost/bootc-box-fixture:latest\n", 1)[1]
    assert "::endgroup::" in boot
    assert "bootc-box: VM up in" in boot.split("::endgroup::")[0]
    assert "Linux version" in Path(run.outputs["console-log"]).read_text()
    assert "exit status 0; VM up in" in run.summary
    image_id = podman("image", "inspect", "--format", "{{.Id}}", FIXTURE)
    assert run.step_outputs["setup"]["cache-key"].endswith(image_id)
    assert "Saved the VM's state for the next runs" in Path(run.outputs["console-log"]).read_text()
    assert (runner_temp / "bootc-box-cache.tar").stat().st_size > 0


def test_a_public_repository_keeps_no_saved_state_in_the_cache_file(
    runner_temp: Path, volume: str
) -> None:
    """By default (cache: auto, and this runner plays a public repository)
    the cache file holds no guest memory and no bootstrap key: pull requests
    from forks can read a public repository's caches."""
    assert sorted(
        tar_names(runner_temp / "bootc-box-cache.tar", "./snapshots/")
    )  # from cache: true
    cache = runner_temp / "images-only.tar"
    env = {**os.environ, "GITHUB_ACTION_PATH": str(ROOT), "CACHE_MODE": "images",
           "CACHE_KEY": "k", "CACHE_HIT": "", "CACHE_PATH": str(cache),
           "INPUT_CACHE_VOLUME": volume, "INPUT_NAME": "vm",
           "STATE_DIR": str(runner_temp)}  # fmt: skip
    subprocess.run(
        ["bash", "-c", 'source "$GITHUB_ACTION_PATH/action/boot"; volume=$INPUT_CACHE_VOLUME; '
         "export_cache"], env=env, check=True,
    )  # fmt: skip
    assert tar_names(cache, "./storage/")
    assert tar_names(cache, "./snapshots/") == []


def tar_names(archive: Path, prefix: str) -> list[str]:
    names = subprocess.run(
        ["tar", "-tf", str(archive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [n for n in names if n.startswith(prefix)]


def test_a_later_job_restores_the_cache_and_a_failing_command_fails_the_step(
    runner_temp: Path, volume: str
) -> None:
    """A new runner has no volume; the cache file brings the saved VM back.
    The image is in the runner's storage, so this job (warm: auto) keeps no
    saved state in the cache it writes: no later job boots a build of this
    workflow."""
    podman("volume", "rm", volume)
    run = run_action(
        {"image": FIXTURE, "box-image": BOX, "command": "echo failing; exit 3",
         "cache-volume": volume, "cache": "true"},
        runner_temp,
    )  # fmt: skip
    assert run.failed
    assert run.outputs["exit-status"] == "3"
    assert (run.step_outputs["setup"]["warm"], run.step_outputs["setup"]["cache"]) == (
        "auto",
        "images",
    )
    assert "was built in this workflow: /cache is kept without its saved VM states" in run.stdout
    assert "Restored /cache from the cache" in run.stdout
    assert ", restored (" in Path(run.outputs["console-log"]).read_text()
    [error] = [line for line in run.stdout.splitlines() if line.startswith("::error ")]
    assert error.startswith("::error title=bootc-box::the command exited with status 3;")
    assert "%0A" in error  # the console's last lines, as one annotation


def test_start_mode_gives_ssh_details_and_stop_mode_powers_the_vm_off(
    runner_temp: Path, volume: str
) -> None:
    started = run_action(
        {"image": FIXTURE, "box-image": BOX, "mode": "start", "name": "under-test",
         "cache-volume": volume},
        runner_temp,
    )  # fmt: skip
    assert not started.failed, started.stdout
    try:
        out = started.outputs
        by_config = subprocess.run(
            ["ssh", "-F", out["ssh-config"], "under-test", "cat", "/etc/hostname"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert by_config.returncode == 0, by_config.stderr
        assert by_config.stdout.strip() == "vm"
        by_outputs = subprocess.run(
            ["ssh", "-i", out["ssh-key"], "-p", out["ssh-port"], "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             f"{out['ssh-user']}@{out['ssh-host']}", "true"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert by_outputs.returncode == 0, by_outputs.stderr
    finally:
        # As the workflow's `if: always()` step does.
        stopped = run_action(
            {"mode": "stop", "name": "under-test", "box-image": BOX, "cache-volume": volume},
            runner_temp,
        )  # fmt: skip
    assert not stopped.failed, stopped.stdout
    assert stopped.outputs["exit-status"] == "0"
    assert "bootc-box: Powering the VM off" in stopped.stdout
    assert (
        subprocess.run(
            ["podman", "container", "exists", "bootc-box-under-test"], check=False
        ).returncode
        == 1
    )
