"""The benchmarks' smoke run: CI does not time anything (a bench is not a
test), it checks that the scripts still run against the box and that the
report draws what they write. One restored run of bench/phases.py on a copy
of the session's saved state (no cold boot of its own), then bench/report.py
on that result and the committed scaling results, with Debian's matplotlib
(ci/prepare-host installs it, for the report only)."""

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import Boot, seeded_cache_volume

BENCH = Path(__file__).parents[2] / "bench"
DOCS = Path(__file__).parents[2] / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_restored_phases_run_and_its_report(first_boot: Boot, tmp_path: Path) -> None:
    phases = tmp_path / "phases.json"
    with seeded_cache_volume(first_boot) as volume:
        run = subprocess.run(
            [BENCH / "phases.py", "1", "--cases", "restored", "--volume", volume.name,
             "--json", phases],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert volume.path.exists(), "a volume it was given is kept"
    measured = json.loads(phases.read_text())["phases"]
    assert list(measured) == ["restored"]
    # Restored, not booted: the run's own phases say so.
    assert measured["restored"]["restore"] > 0
    assert "boot" not in measured["restored"]
    assert "1.00x restored" in run.stdout

    report = subprocess.run(
        [BENCH / "report.py", DOCS / "scaling.json", "--phases", phases, "--docs", tmp_path],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "performance.md").read_text()
    assert "| restored |" in page
    assert "vs restored" in page
    assert (tmp_path / "performance.png").read_bytes().startswith(PNG_SIGNATURE)
