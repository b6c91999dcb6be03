"""The shell helpers every ci/ script uses (ci/lib.bash): retries that ride
out one failed fetch but not a lasting failure, and steps that show one line
each and the log's tail when they fail."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` after sourcing ci/lib.bash, with no wait between retries."""
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {ROOT}/ci/lib.bash; {script}"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "RETRY_DELAY": "0", "STEP_LOG": str(tmp_path / "log")},
    )  # fmt: skip


# Fails until it has been called N times (counting in a file, as each try
# is a new process).
FLAKY = "flaky() { echo x >> tries; [ $(wc -l < tries) -ge $1 ]; }; "


def test_retry_rides_out_a_failed_fetch(tmp_path: Path) -> None:
    result = bash(FLAKY + "retry 3 flaky 2 && echo fetched", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fetched\n"
    assert "retry: flaky 2 failed (exit status 1); again in 0 s (try 2 of 3)" in result.stderr
    assert (tmp_path / "tries").read_text().count("x") == 2


def test_retry_gives_up_with_the_commands_own_status(tmp_path: Path) -> None:
    (tmp_path / "fetch").write_text("#!/bin/sh\necho E: mirror sync in progress >&2\nexit 100\n")
    (tmp_path / "fetch").chmod(0o755)
    result = bash("retry 2 ./fetch", tmp_path)
    assert result.returncode == 100
    assert result.stderr.count("E: mirror sync in progress") == 2
    assert "failed 2 times (last exit status 100); giving up" in result.stderr


def test_apt_get_retries_fetches_and_fails_updates_on_any_error(tmp_path: Path) -> None:
    # A stand-in apt-get that prints its arguments: the real one would fetch.
    (tmp_path / "apt-get").write_text('#!/bin/sh\necho "$@"\n')
    (tmp_path / "apt-get").chmod(0o755)
    result = bash("PATH=$PWD:$PATH; apt_get update -qq; apt_get install -y podman", tmp_path)
    assert result.stdout.splitlines() == [
        "-o Acquire::Retries=5 --error-on=any update -qq",
        "-o Acquire::Retries=5 install -y podman",
    ]


def test_a_step_prints_one_line_and_logs_the_noise(tmp_path: Path) -> None:
    result = bash("step 'build the thing' sh -c 'echo apt noise'", tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("build the thing ")
    assert result.stdout.endswith(" s\n")
    assert result.stdout.count("\n") == 1
    assert "apt noise" in (tmp_path / "log").read_text()


def test_a_failed_step_shows_the_logs_tail_and_stops(tmp_path: Path) -> None:
    result = bash(
        "step 'build the thing' sh -c 'echo E: the real error >&2; exit 7'; echo not reached",
        tmp_path,
    )
    assert result.returncode == 7
    lines = result.stdout.splitlines()
    assert lines[0].startswith("build the thing ")
    assert lines[0].endswith("failed after 0 s (exit status 7)")
    assert f"The last lines of {tmp_path / 'log'}:" in lines
    assert "    E: the real error" in lines
    assert "not reached" not in result.stdout


def test_build_images_refuses_an_unknown_image_name() -> None:
    result = subprocess.run(
        [ROOT / "ci/build-images", "fixtrue"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert (
        "no image called 'fixtrue'; use box, fixture, two-kernels, installable, uki, bad-uki"
        " or cloud-init" in result.stderr
    )
