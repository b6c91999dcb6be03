"""Every record bootc-box keeps as JSON reads back as written, and a record
whose fields have other types (anyone who can write the cache may have
written it) is refused, not half-read."""

import json
from typing import Any

import pytest

from bootc_box.base_disks import DiskManifest, DiskOptions
from bootc_box.kept_vms import KeptVm
from bootc_box.records import from_json, to_json
from bootc_box.snapshots import Manifest
from bootc_box.vms import RunRecord, VmState

RECORDS: list[object] = [
    RunRecord("web", "localhost/img", VmState.RUNNING, 42, 1.5, True, "2026-12-05T00:00:00+00:00",
             ssh_port=40022, publish=("127.0.0.1:8080:80/tcp",), supervisor_ticks=None),
    RunRecord("db", "img", VmState.BOOTING, 7, 2.0, False, "t", supervisor_ticks=12345),
    KeptVm("web", "localhost/img", "sha256:ab", "diskkey", 2048, 2, ("quiet", "a=b"),
           ("127.0.0.1:8080:80",), ("/src:/src:ro",), "2026-12-03T00:00:00+00:00",
           allow_host_loopback=True),
    Manifest("key", "sha256:ab", "localhost/img", 2048, 2, "console=ttyS0",
             {"qemu": "QEMU 10", "bootc-box": "0.1"}, 4096, "t"),
    DiskManifest("key", DiskOptions("sha256:ab", "localhost/img", "qcow2", 10 << 30, "xfs",
                                    None, ("quiet",)), 1 << 20, "t"),
]  # fmt: skip


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_record_reads_back_as_written(record: object) -> None:
    assert from_json(type(record), json.loads(to_json(record))) == record


def test_enums_are_kept_by_value_and_tuples_as_lists() -> None:
    data = json.loads(to_json(RECORDS[0]))
    assert data["state"] == "running"
    assert data["publish"] == ["127.0.0.1:8080:80/tcp"]
    assert data["supervisor_ticks"] is None


def test_fields_a_newer_bootc_box_added_are_ignored_and_defaults_fill_older_ones() -> None:
    data = json.loads(to_json(RECORDS[2]))
    del data["allow_host_loopback"]
    data["made_by_a_newer_version"] = 1
    vm = from_json(KeptVm, data)
    assert vm.allow_host_loopback is False
    assert vm.kargs == ("quiet", "a=b")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"memory_mib": "2048"}, "memory_mib is not a number"),
        ({"memory_mib": True}, "memory_mib is not a number"),
        ({"allow_host_loopback": 1}, "allow_host_loopback is not true or false"),
        ({"kargs": "quiet"}, "kargs is not a list of strings"),
        ({"kargs": ["quiet", 3]}, "kargs is not a list of strings"),
        ({"name": None}, "name is not a string"),
    ],
)
def test_a_field_of_another_type_is_refused(change: dict[str, Any], problem: str) -> None:
    data = {**json.loads(to_json(RECORDS[2])), **change}
    with pytest.raises(TypeError, match=problem):
        from_json(KeptVm, data)


def test_a_missing_field_an_unknown_state_or_no_object_is_refused() -> None:
    data = json.loads(to_json(RECORDS[0]))
    with pytest.raises(ValueError, match="supervisor_pid is missing"):
        from_json(RunRecord, {k: v for k, v in data.items() if k != "supervisor_pid"})
    with pytest.raises(TypeError, match="state is not one of"):
        from_json(RunRecord, {**data, "state": "dancing"})
    with pytest.raises(TypeError, match="not a JSON object"):
        from_json(RunRecord, [data])
    nested = json.loads(to_json(RECORDS[4]))
    nested["options"]["size"] = "big"
    with pytest.raises(TypeError, match="size is not a number"):
        from_json(DiskManifest, nested)
