"""The e2e marker splits the suite: `-m "not e2e"` is the unit tests, `-m e2e`
the tests that boot VMs (README's `ci/test -m e2e`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(marker: str) -> list[str]:
    """Node IDs pytest collects from tests/ with `-m MARKER` (nothing runs)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", marker, "tests"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_not_e2e_collects_the_unit_tests_and_only_them() -> None:
    found = collected("not e2e")
    assert "tests/unit/test_kernel.py::test_one_kernel_is_found_with_its_initramfs" in found
    assert all(node.startswith("tests/unit/") for node in found), found


def test_e2e_collects_no_unit_test() -> None:
    found = collected("e2e")
    assert "tests/e2e/test_run.py::test_exit_status_of_command_is_returned" in found
    assert all(node.startswith("tests/e2e/") for node in found), found
