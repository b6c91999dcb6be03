"""The tmt plugin's pure parts and the launchers both plugins share; the
plugin itself runs under tmt in tests/e2e/test_tmt.py."""

import re
from pathlib import Path

import pytest

from bootc_box.launchers import BOX_VM, box_launcher, native_launcher, up_line

tmt_plugin = pytest.importorskip("bootc_box.tmt_plugin", reason="tmt is not installed")
VmOptions, inputs, memory_text, run_options = (
    tmt_plugin.VmOptions,
    tmt_plugin.inputs,
    tmt_plugin.memory_text,
    tmt_plugin.run_options,
)


def test_every_key_becomes_bootc_box_runs_option_with_absolute_paths(tmp_path: Path) -> None:
    options = VmOptions(
        image="localhost/img",
        memory="4G",
        cpus=1,
        karg=("quiet", "a=b c"),
        accel="tcg",
        set_credential=("app.x:1",),
        load_credential=(f"app.y:{tmp_path}/y",),
        systemd_units=tmp_path / "units",
        cloud_init=tmp_path / "units",
        to_disk=True,
    )
    assert run_options(options) == [
        "--memory", "4G", "--cpus", "1", "--accel", "tcg",
        "--karg", "quiet", "--karg", "a=b c",
        "--set-credential", "app.x:1",
        "--load-credential", f"app.y:{tmp_path}/y",
        "--systemd-units", f"{tmp_path}/units",
        "--cloud-init", f"{tmp_path}/units",
        "--persistent",
    ]  # fmt: skip
    # The files a box is given, read-only, each once (podman refuses a
    # path mounted twice); credentials' values never.
    assert inputs(options) == [tmp_path / "y", tmp_path / "units"]
    assert run_options(VmOptions(image="i")) == []


def test_a_disk_boots_with_the_plans_file_left_unchanged(tmp_path: Path) -> None:
    options = VmOptions(disk=tmp_path / "d.raw")
    assert run_options(options) == ["--disk", f"{tmp_path}/d.raw", "--transient"]
    assert inputs(options) == [tmp_path / "d.raw"]


@pytest.mark.parametrize(
    ("value", "text"), [(2048, "2048M"), ("2048", "2048M"), ("2G", "2G"), (None, None)]
)
def test_memory_is_mib_as_in_tmts_plans_or_a_bootc_box_size(
    value: int | str | None, text: str | None
) -> None:
    assert memory_text(value) == text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (VmOptions(), "provision how: bootc-box needs an image: give image: IMAGE"),
        (VmOptions(image="i", disk=Path("/d")), "give image (with to-disk: true to boot its disk)"
         " or disk, not both"),
        (VmOptions(image="i", cloud_init=Path("/nowhere/seed")),
         "/nowhere/seed does not exist; check the path in the plan"),
        (VmOptions(image="i", load_credential=("app.key",)),
         "load-credential 'app.key' names no file: give ID:PATH"),
        (VmOptions(image="i", systemd_units=Path("/a:b/units")),
         "/a:b/units: a path with ':' or ',' cannot be shared into the box"),
    ],
)  # fmt: skip
def test_what_bootc_box_cannot_run_is_one_line(options: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        options.check()  # type: ignore[attr-defined]


def test_a_box_launcher_shares_the_inputs_read_only_and_removes_a_kept_vm_first() -> None:
    launcher = box_launcher(
        "b1", box_image="localhost/box", volume="vol", shared=(Path("/k"),),
        writable=(Path("/w"),), store="/store",
    )  # fmt: skip
    assert launcher.start == [
        "podman", "run", "-d", "--name", "b1", "--network", "host", "--device", "/dev/kvm",
        "-v", "vol:/cache", "-v", "/store:/var/lib/containers/host-storage:ro",
        "-v", "/k:/k:ro", "-v", "/w:/w", "localhost/box", "run", "--name", BOX_VM,
    ]  # fmt: skip
    assert launcher.stop == (["podman", "rm", "--force", "--time", "30", "b1"],)
    kept = box_launcher("b2", box_image="localhost/box", volume="vol", kept=True, store="/s")
    # A kept VM lives on the shared volume: named as its box, and removed
    # once the box is gone (its `rm` would end with the box's VM).
    assert kept.vm == "b2"
    assert kept.start[-2:] == ["--name", "b2"]
    assert kept.stop == (
        ["podman", "rm", "--force", "--time", "30", "b2"],
        ["podman", "run", "--rm", "-v", "vol:/cache", "localhost/box", "rm", "--force", "b2"],
    )


def test_a_native_launcher_runs_bootc_box_on_this_host() -> None:
    launcher = native_launcher("t1")
    assert launcher.start[1:] == ["run", "-d", "--name", "t1"]
    assert launcher.stop == ([launcher.command[0], "rm", "--force", "t1"],)
    assert launcher.vm == "t1"


def test_the_summary_line_is_found_in_what_bootc_box_said() -> None:
    said = (
        "bootc-box: 10:22:36 pull 0.1 s\n"
        "bootc-box: VM up in 38 s, cold (pull 0 s, mount 0 s, boot 37 s)\n"
        "bootc-box: VM vm is running again\n"
    )
    assert up_line(said) == "VM up in 38 s, cold (pull 0 s, mount 0 s, boot 37 s)"
    assert up_line("bootc-box: error: no such image\n") == ""
