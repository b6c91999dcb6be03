import json

from bootc_box.doctor import render_json, render_table
from bootc_box.environment import Check

CHECKS = [
    Check("kvm", True, "/dev/kvm"),
    Check("/cache volume", False, "not a volume", "add -v bootc-box:/cache", required=False),
    Check("virtiofsd", False, "not found", "install the virtiofsd package"),
    Check("fuse", False, "not needed", "", required=False),
]


def test_table_shows_status_and_the_fix_only_for_what_fails() -> None:
    lines = render_table(CHECKS).splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL", "FIX"]
    assert lines[1].split()[:2] == ["kvm", "ok"]
    assert lines[1].rstrip().endswith("/dev/kvm")
    assert "warning" in lines[2]
    assert lines[2].endswith("add -v bootc-box:/cache")
    assert "MISSING" in lines[3]
    # Absent but not needed: nothing to fix, so no warning.
    assert lines[4].split() == ["fuse", "info", "not", "needed"]


def test_json_has_every_field() -> None:
    data = json.loads(render_json(CHECKS))
    assert data[1] == {
        "name": "/cache volume",
        "ok": False,
        "detail": "not a volume",
        "fix": "add -v bootc-box:/cache",
        "required": False,
    }
