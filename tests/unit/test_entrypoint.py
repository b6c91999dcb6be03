"""The box's entrypoint (entrypoint/bootc-box-entrypoint), its functions run
one at a time from the sourced script: the parts that need no box."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint/bootc-box-entrypoint"


def entrypoint(
    script: str, cwd: Path, env: dict[str, str] | None = None, *, argv: tuple[str, ...] = ()
) -> "subprocess.CompletedProcess[str]":
    """Run `script` after sourcing the entrypoint, which defines its functions."""
    return subprocess.run(
        ["bash", "-c", f'source "{ENTRYPOINT}"; {script}', str(ENTRYPOINT), *argv],
        cwd=cwd, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip


def test_joining_the_boxs_namespaces_carries_the_callers_directory(tmp_path: Path) -> None:
    # podman exec -w /keys BOX bootc-box run -d --ssh-key ./id ...: nsenter
    # (here one that prints what it was given) lands in the namespace's /.
    keys = tmp_path / "keys"
    keys.mkdir()
    (tmp_path / "nsenter").write_text('#!/bin/sh\necho "cwd=$BOOTC_BOX_CWD"; printf "%s\\n" "$@"\n')
    (tmp_path / "nsenter").chmod(0o755)
    (tmp_path / "holder").write_text(f"{os.getpid()}\n")
    result = entrypoint(
        f'HOLDER={tmp_path}/holder; PATH={tmp_path}:$PATH; join_user_namespace "$@"',
        keys,
        argv=("run", "-d", "--ssh-key", "./id", "img"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cwd={keys}"
    assert lines[lines.index("--") + 1 :] == [
        str(ENTRYPOINT),
        "run",
        "-d",
        "--ssh-key",
        "./id",
        "img",
    ]


def test_the_rerun_entrypoint_goes_back_to_the_callers_directory(tmp_path: Path) -> None:
    result = entrypoint(
        'restore_cwd; pwd; echo "${BOOTC_BOX_CWD-unset}"',
        Path("/"),
        {"BOOTC_BOX_CWD": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path), "unset"]


def test_a_directory_missing_in_the_boxs_namespaces_is_one_line_and_125(tmp_path: Path) -> None:
    result = entrypoint("restore_cwd", Path("/"), {"BOOTC_BOX_CWD": str(tmp_path / "gone")})
    assert result.returncode == 125
    assert result.stderr == (
        f"bootc-box: error: the working directory {tmp_path / 'gone'} is not in the box's "
        "namespaces; run from another one, or pass absolute paths\n"
    )


def can_mount_in_a_user_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "t", "/mnt"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not can_mount_in_a_user_namespace(), reason="needs user namespaces")
def test_a_read_only_cache_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    # A real read-only mount, in a mount namespace of this test's own.
    cache = tmp_path / "cache"
    cache.mkdir()
    script = f"""mount -t tmpfs -o ro cache {cache} && exec bash -c 'source "{ENTRYPOINT}"
        CACHE={cache}; prepare_cache; echo prepared'"""
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 125
    assert result.stderr == (
        f"bootc-box: error: {cache} is mounted read-only, and bootc-box keeps its images there; "
        f"mount it read-write (-v bootc-box:{cache}, without :ro)\n"
    )
    assert "prepared" not in result.stdout


def test_a_writable_cache_gets_its_store(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # A volume, as mountpoint(1) is told to say: nothing is mounted here.
    stubs = "mountpoint() { return 0; }; mount() { return 99; }"
    result = entrypoint(f"{stubs}; CACHE={cache}; prepare_cache", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (cache / "storage").is_dir()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (("run", "img", "--", "true"), "run"),
        (("--help",), "help"),
        (("--virtiofsd-sandbox", "none", "run", "img"), "run"),
        # Help is help after a command of ours too: no cache, no warning.
        (("run", "--help"), "help"),
        (("--debug", "to-disk", "-h"), "help"),
        (("run", "-d", "--help"), "help"),
        # Not when it is the guest's, an operand's, or another program's.
        (("run", "img", "--", "prog", "--help"), "run"),
        (("run", "--", "img", "--help"), "run"),
        (("ssh", "web", "--help"), "ssh"),
        (("sleep", "--help"), "sleep"),
        ((), ""),
    ],
)
def test_the_command_is_found_and_help_needs_no_cache(
    tmp_path: Path, argv: tuple[str, ...], command: str
) -> None:
    result = entrypoint('command_of "$@"', tmp_path, argv=argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{command}\n"


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("sleep", True),
        ("bash", True),
        ("/usr/bin/ls", True),
        # Not ours, so bootc-box says there is no such command (exit 125),
        # instead of listing the box's / or failing as `exec: not found`.
        ("ls", False),
        ("exec", False),
        ("run", False),
        ("help", False),
        ("/no/such/program", False),
        ("", False),
    ],
)
def test_only_named_programs_of_the_box_run_as_themselves(
    tmp_path: Path, command: str, program: bool
) -> None:
    result = entrypoint('runs_as_program "$1"', tmp_path, argv=(command,))
    assert result.returncode == (0 if program else 1), result.stderr
