"""The privilege matrix: the box boots the fixture however podman runs it.
(Default capabilities with a volume is the shared boot in test_run.py.)"""

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import BOOT_DEADLINE, FIXTURE, box_argv, new_cache_volume

NO_VOLUME_WARNING = "/cache is not a volume, so nothing is kept between runs"


@pytest.fixture(params=[True, False], ids=["volume", "no-volume"])
def volume(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if not request.param:
        yield None
        return
    with new_cache_volume() as cache:
        yield cache.name


@pytest.mark.parametrize("privileged", [True, False], ids=["privileged", "default-caps"])
def test_fixture_boots(privileged: bool, volume: str | None) -> None:
    if not privileged and volume:
        pytest.skip("covered by the shared boot in test_run.py")
    result = subprocess.run(
        box_argv("run", FIXTURE, "--", "cat", "/usr/share/bootc-box-fixture-marker",
                 volume=volume, privileged=privileged, options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bootc-box fixture"
    assert (NO_VOLUME_WARNING in result.stderr) is (volume is None)


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
