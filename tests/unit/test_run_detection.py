"""Which command a bootc-box command line runs, past the options before it,
as manage.is_run_command and the box's entrypoint tell it: the values of
the top-level group's options (`--virtiofsd-sandbox none`) are no command."""

import subprocess
from pathlib import Path

import pytest

from bootc_box import manage
from bootc_box.cli import cli, value_options
from bootc_box.options import GLOBAL_VALUE_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint/bootc-box-entrypoint"
MODULE = ["python3", "-m", "bootc_box"]
SCRIPT = ["/usr/bin/python3", "/usr/local/bin/bootc-box"]


@pytest.mark.parametrize(
    ("argv", "is_run"),
    [
        ([*MODULE, "--virtiofsd-sandbox", "none", "run", "img"], True),
        ([*MODULE, "--virtiofsd-sandbox=none", "run", "img"], True),
        ([*SCRIPT, "--virtiofsd-sandbox", "chroot", "--debug", "run", "-d", "img"], True),
        ([*MODULE, "--debug", "--", "run", "img"], True),
        ([*MODULE, "--virtiofsd-sandbox", "none", "ssh", "--", "run"], False),
        # A value that is a command's name is still the option's.
        ([*MODULE, "--virtiofsd-sandbox", "run", "ssh"], False),
        ([*MODULE, "--virtiofsd-sandbox"], False),
    ],
)
def test_a_run_is_told_past_the_global_options_values(argv: list[str], is_run: bool) -> None:
    assert manage.is_run_command(argv) is is_run


def test_the_global_options_that_take_a_value_are_the_groups() -> None:
    # cli.py's group defines them; a new one there must be named here too.
    assert value_options(cli) == GLOBAL_VALUE_OPTIONS


def entrypoint(tmp_path: Path, script: str, *argv: str) -> "subprocess.CompletedProcess[str]":
    """`script` run after sourcing the entrypoint, in a box stood in for:
    privileged, its cache prepared (said on stdout), python3 and chroot
    programs that say how they were run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for program in ("python3", "chroot"):
        (bin_dir / program).write_text(f'#!/bin/sh\necho {program} "$@"\n')
        (bin_dir / program).chmod(0o755)
    stubs = "has_cap_sys_admin() { return 0; }; prepare_cache() { echo prepared; }"
    return subprocess.run(
        ["bash", "-c", f'source "{ENTRYPOINT}"; {stubs}; {script}', str(ENTRYPOINT), *argv],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "prepared"),
    [
        (("--virtiofsd-sandbox", "chroot", "run", "img"), True),
        (("--virtiofsd-sandbox=chroot", "run", "img"), True),
        # doctor must see the box as podman made it.
        (("--virtiofsd-sandbox", "none", "doctor"), False),
        (("--virtiofsd-sandbox=none", "doctor"), False),
        (("--debug", "--virtiofsd-sandbox", "auto", "--help"), False),
    ],
)
def test_the_entrypoint_hands_a_command_after_global_values_to_bootc_box(
    tmp_path: Path, argv: tuple[str, ...], prepared: bool
) -> None:
    result = entrypoint(tmp_path, 'main "$@"', *argv)
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()
    assert said == [*(["prepared"] if prepared else []), " ".join(["python3", *MODULE[1:], *argv])]


def test_the_entrypoint_knows_the_global_options_that_take_a_value(tmp_path: Path) -> None:
    result = entrypoint(tmp_path, 'echo "$BOOTC_BOX_VALUE_OPTIONS"')
    assert set(result.stdout.split()) == value_options(cli)


def test_the_entrypoint_knows_every_command(tmp_path: Path) -> None:
    # What it does not know it runs as a program of the box's, if there is one.
    result = entrypoint(tmp_path, 'echo "$BOOTC_BOX_COMMANDS"')
    assert set(result.stdout.split()) == set(cli.commands)
