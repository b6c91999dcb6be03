"""The privilege matrix: the box boots the fixture however podman runs it.
(Default capabilities with a volume is the shared boot in test_run.py.)

Privileged without a volume is not a case of its own: privileges change only
the entrypoint (a user namespace of its own or not, tested with a volume
here), and the missing volume only /cache (a tmpfs, nothing saved: the
default-capabilities case); bootc-box itself runs the same code for both."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BOOT_DEADLINE, FIXTURE, box_argv, new_cache_volume

NO_VOLUME_WARNING = "/cache is not a volume, so nothing is kept between runs"


@pytest.mark.parametrize(
    ("privileged", "with_volume"),
    [(True, True), (False, False)],
    ids=["privileged-volume", "default-caps-no-volume"],
)
def test_fixture_boots(privileged: bool, with_volume: bool, request: pytest.FixtureRequest) -> None:
    """With a volume, the fixture's state saved by a run with default
    capabilities is restored in a privileged box."""
    volume = request.getfixturevalue("warm_volume").name if with_volume else None
    result = subprocess.run(
        box_argv("run", FIXTURE, "--", "cat", "/usr/share/bootc-box-fixture-marker",
                 volume=volume, privileged=privileged, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bootc-box fixture"
    assert (NO_VOLUME_WARNING in result.stderr) is (volume is None)
    assert (", restored (" in result.stderr) is with_volume


def doctor(*, volume: str | None, privileged: bool) -> dict[str, dict[str, object]]:
    result = subprocess.run(
        box_argv("doctor", "--json", volume=volume, privileged=privileged, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {check["name"]: check for check in json.loads(result.stdout)}


@pytest.mark.parametrize("privileged", [True, False], ids=["privileged", "default-caps"])
def test_doctor_reports_how_the_box_will_mount(privileged: bool) -> None:
    with new_cache_volume() as cache:
        checks = doctor(volume=cache.name, privileged=privileged)
    assert checks["privileges"]["ok"]
    expected = "CAP_SYS_ADMIN" if privileged else "user namespace"
    assert expected in str(checks["privileges"]["detail"])
    assert checks["/cache volume"]["ok"]
    assert checks["host images"]["ok"]
    assert checks["outer podman"]["detail"] == "rootful"


def test_doctor_names_the_flag_for_a_missing_volume() -> None:
    checks = doctor(volume=None, privileged=False)
    assert checks["/cache volume"]["ok"] is False
    assert checks["/cache volume"]["fix"] == "add -v bootc-box:/cache"


def test_a_box_that_may_not_make_user_namespaces_says_why(tmp_path: Path) -> None:
    """A seccomp profile that refuses unshare(2), as a strict host's might:
    the entrypoint fails at once with the reason and the fix (it used to
    hang in `unshare --map-users`)."""
    profile = tmp_path / "no-unshare.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))  # fmt: skip
    result = subprocess.run(
        box_argv("run", FIXTURE, "--", "true",
                 options=("--rm", "--security-opt", f"seccomp={profile}")),
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 125
    assert result.stderr.splitlines()[-1] == (
        "bootc-box: error: cannot create a user namespace in this container "
        "(Operation not permitted); add --privileged"
    )
