"""The workflow and the action: what GitHub would run, checked here."""

import re
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
