import dataclasses
import json
import subprocess
from pathlib import Path

import psutil
import pytest

from bootc_box import launch, persistent, tpm
from bootc_box.base_disks import DiskOptions, commit_disk, installing
from bootc_box.boot import Disk
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import FirmwareChoice
from bootc_box.kept_vms import (
    CONFIG,
    LOCK,
    KeptVm,
    find_kept_vm,
    forget_stopped,
    kept_vm_names,
    making_vm,
    prune_half_made,
    remove_kept_vm,
    running_elsewhere,
    used_disk_keys,
)
from bootc_box.locks import hold_lock
from bootc_box.machine_options import MachineOptions
from bootc_box.manage import kept_records, run_rm
from bootc_box.persistent import run_persistent, run_start
from bootc_box.qemu import qemu_img_create, qemu_img_create_argv
from bootc_box.run_spec import DiskSource, ImageSource, RunSpec
from bootc_box.vms import RunRecord, VmState, being_made_here, write_record

NATIVE = Environment(in_box=False)
VM = KeptVm("web", "localhost/img", "sha256id", "diskkey", 2048, 2, ("quiet",),
                  ("127.0.0.1:8080:80",), (), "2026-12-03T00:00:00+00:00")  # fmt: skip


@pytest.fixture(autouse=True)
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BOOTC_BOX_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(persistent, "probe_environment", lambda: NATIVE)
    return tmp_path / "xdg" / "bootc-box" / "vms"


def keep(root: Path, vm: KeptVm = VM) -> Path:
    directory = root / vm.name
    directory.mkdir(parents=True)
    (directory / CONFIG).write_text(json.dumps(vm.__dict__))
    return directory


def test_a_kept_vm_reads_back_and_holds_its_base_disk(dirs: Path) -> None:
    assert find_kept_vm(NATIVE, "web") is None
    keep(dirs)
    assert find_kept_vm(NATIVE, "web") == VM
    assert kept_vm_names(NATIVE) == ["web"]
    assert used_disk_keys(NATIVE) == {"diskkey"}


def test_the_overlay_is_backed_by_the_cached_disk(tmp_path: Path) -> None:
    base = tmp_path / "disk.raw"
    with base.open("wb") as f:
        f.truncate(1 << 30)
    overlay = tmp_path / "disk.qcow2"
    qemu_img_create(qemu_img_create_argv(overlay, "qcow2", backing=Disk(base, "raw")))
    argv = ["qemu-img", "info", "--output=json", str(overlay)]
    info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)
    assert (info["backing-filename"], info["backing-filename-format"]) == (str(base), "raw")


def keep_on_a_base_disk(root: Path, vm: KeptVm) -> tuple[Path, Path]:
    """`vm` kept in `root` on a cached base disk: its directory, and the disk."""
    options = DiskOptions("sha256id", "localhost/img", "raw", 4096, "ext4", None, ())
    with installing(NATIVE, options) as slot:
        (slot / options.file_name).write_bytes(bytes(4096))
        base = commit_disk(NATIVE, options, slot)
    return keep(root, dataclasses.replace(vm, disk_key=options.key)), base


@pytest.fixture
def booted(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """What the kept VMs' runs ask run_vm to boot (it boots nothing)."""
    specs: list[RunSpec] = []

    def run_vm(spec: RunSpec) -> int:
        specs.append(spec)
        return 0

    monkeypatch.setattr(persistent, "run_vm", run_vm)
    return specs


def test_a_kept_vm_boots_its_overlay_on_the_base_disk_as_recorded_not_as_its_header_says(
    dirs: Path, booted: list[RunSpec]
) -> None:
    directory, base = keep_on_a_base_disk(dirs, VM)
    assert run_start(("web",)) == 0
    [spec] = booted
    assert isinstance(spec.source, DiskSource)
    assert spec.source.disk == Disk(directory / "disk.qcow2", "qcow2", backing=Disk(base, "raw"))
    assert (spec.source.efi_vars, spec.source.lock) == (directory / "efivars.fd", directory / LOCK)
    assert spec.source.tpm_state == directory / "tpm"
    # A record from before --firmware and --tpm: plain UEFI, no TPM.
    assert spec.machine == MachineOptions(
        VM.memory_mib, VM.cpus, VM.kargs, firmware=FirmwareChoice.UEFI, tpm=False
    )


def test_a_kept_vm_boots_with_the_firmware_and_tpm_it_was_made_with(
    dirs: Path, booted: list[RunSpec]
) -> None:
    keep_on_a_base_disk(dirs, dataclasses.replace(VM, firmware="uefi-secure", tpm=True))
    assert run_start(("web",)) == 0
    # The same run line, naming them or not.
    for asked in (MachineOptions(), MachineOptions(firmware=FirmwareChoice.UEFI_SECURE, tpm=True)):
        assert run_persistent(RunSpec(ImageSource("localhost/img"), name="web", machine=asked)) == 0
    assert [(s.machine.firmware, s.machine.tpm) for s in booted] == [
        (FirmwareChoice.UEFI_SECURE, True)
    ] * 3
    for asked, said in (
        (MachineOptions(firmware=FirmwareChoice.UEFI), "made with --firmware uefi-secure"),
        (MachineOptions(tpm=False), "made with --tpm"),
    ):
        with pytest.raises(BootcBoxError, match=said) as err:
            run_persistent(RunSpec(ImageSource("localhost/img"), name="web", machine=asked))
        assert "remove it with bootc-box rm web and make it again" in str(err.value.hint)


def test_removing_a_kept_vm_deletes_its_disk_unless_it_runs(dirs: Path) -> None:
    directory = keep(dirs)
    with (
        hold_lock(directory / LOCK, BootcBoxError("held")),
        pytest.raises(BootcBoxError, match="web is already running"),
    ):
        remove_kept_vm(NATIVE, "web")
    assert remove_kept_vm(NATIVE, "web")
    assert not directory.exists()
    assert not remove_kept_vm(NATIVE, "web")


def test_a_stopped_record_gives_its_name_back_a_live_one_does_not(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "vms" / "web"
    directory.mkdir(parents=True)
    record = RunRecord("web", "img", VmState.STOPPED, 0, 0.0, True, "now")
    write_record(directory, record)
    forget_stopped(NATIVE, "web")
    assert not directory.exists()
    directory.mkdir()
    me = psutil.Process()
    write_record(directory, RunRecord("web", "img", VmState.RUNNING, me.pid, me.create_time(),
                                     True, "now"))  # fmt: skip
    with pytest.raises(BootcBoxError, match="web is already running"):
        forget_stopped(NATIVE, "web")


def test_a_vm_is_kept_for_the_image_it_was_made_from(dirs: Path) -> None:
    keep(dirs)
    with pytest.raises(BootcBoxError, match="keeps its state from localhost/img, not other") as err:
        run_persistent(RunSpec(ImageSource("other"), name="web"))
    assert err.value.hint == "start it with bootc-box start web, or remove it with bootc-box rm web"
    with pytest.raises(BootcBoxError, match="--persistent needs --name NAME"):
        run_persistent(RunSpec(ImageSource("localhost/img")))


def test_prune_removes_what_a_killed_run_half_made_and_frees_the_disk_it_named(
    dirs: Path,
) -> None:
    keep(dirs)
    killed = dirs / ".db.partial-x1y2"  # SIGKILLed between config and rename
    killed.mkdir()
    (killed / CONFIG).write_text(json.dumps({**VM.__dict__, "name": "db", "disk_key": "other"}))
    assert used_disk_keys(NATIVE) == {"diskkey", "other"}
    assert prune_half_made(NATIVE) == 1
    assert not killed.exists()
    assert used_disk_keys(NATIVE) == {"diskkey"}
    assert kept_vm_names(NATIVE) == ["web"]


def test_prune_leaves_a_vm_being_made_alone_and_a_failed_making_leaves_nothing(
    dirs: Path,
) -> None:
    with making_vm(dirs, "db") as partial:
        (partial / CONFIG).write_text("{}")
        assert prune_half_made(NATIVE) == 0
        assert partial.is_dir()
    assert not partial.exists()
    with pytest.raises(OSError, match="qemu-img"), making_vm(dirs, "db") as partial:
        raise OSError("qemu-img failed")
    assert [p.name for p in dirs.iterdir()] == [".making.lock"]


def test_a_record_from_before_the_loopback_was_closed_keeps_it_closed(dirs: Path) -> None:
    older = {k: v for k, v in VM.__dict__.items() if k != "allow_host_loopback"}
    (keep(dirs) / CONFIG).write_text(json.dumps(older))
    found = find_kept_vm(NATIVE, "web")
    assert found is not None
    assert found.allow_host_loopback is False


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"name": "../../x"}, "invalid VM name '../../x'"),
        ({"name": "db"}, "it names VM db"),
        ({"memory_mib": 100}, "--memory '100' is too small to boot"),
        ({"memory_mib": "2G"}, "memory_mib is not a number"),
        ({"cpus": 0}, "cpus 0 is not 1 or more"),
        ({"kargs": ["quiet", 1]}, "kargs is not a list of strings"),
        ({"publish": ["8080"]}, "invalid --publish '8080'"),
        ({"binds": ["/src:src"]}, "invalid --bind '/src:src': GUESTDIR must be absolute"),
        ({"disk_key": None}, "disk_key is not a string"),
        ({"allow_host_loopback": "yes"}, "allow_host_loopback is not true or false"),
        ({"firmware": "bios"}, "invalid --firmware 'bios'"),
        ({"tpm": 1}, "tpm is not true or false"),
    ],
)
def test_a_kept_vms_record_is_checked_as_its_command_line_was(
    dirs: Path, change: dict[str, object], problem: str
) -> None:
    """Whoever can write the cache wrote the record too."""
    (keep(dirs) / CONFIG).write_text(json.dumps({**VM.__dict__, **change}))
    with pytest.raises(BootcBoxError) as err:
        find_kept_vm(NATIVE, "web")
    assert err.value.message.startswith("the state of VM web is unreadable (")
    assert problem in err.value.message
    assert err.value.hint == "remove it with bootc-box rm web"


@pytest.fixture
def outside(dirs: Path) -> Path:
    """What `../../x` names from the kept VMs' directory: a directory
    outside it, looking like a kept VM."""
    victim = dirs / ".." / ".." / "x"
    victim.mkdir(parents=True)
    (victim / CONFIG).write_text("{}")
    return victim


def test_a_record_naming_a_path_deletes_or_boots_nothing_outside(
    dirs: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (keep(dirs) / CONFIG).write_text(json.dumps({**VM.__dict__, "name": "../../x"}))
    booted: list[RunSpec] = []
    monkeypatch.setattr(persistent, "run_vm", booted.append)
    assert run_rm(NATIVE, (), force=False, remove_all=True, timeout=1) == 0
    with pytest.raises(BootcBoxError, match="the state of VM web is unreadable"):
        run_start(("web",))
    assert booted == []
    assert (outside / CONFIG).read_text() == "{}"
    assert (dirs / "web").is_dir()


@pytest.mark.parametrize("name", ["../../x", "../x", "/x", ".x"])
def test_a_name_that_is_a_path_is_refused_before_it_is_joined(
    dirs: Path, outside: Path, name: str
) -> None:
    for use in (find_kept_vm, remove_kept_vm, running_elsewhere, forget_stopped):
        with pytest.raises(BootcBoxError, match="invalid VM name"):
            use(NATIVE, name)
    assert (outside / CONFIG).read_text() == "{}"


def test_a_vm_is_known_to_be_made_here_while_its_image_installs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `ssh web` waits for, right after `run --persistent --name web`."""
    seen: list[bool] = []

    def create(env: Environment, spec: RunSpec, image: str) -> KeptVm:
        seen.append(being_made_here(env, "web"))
        return VM

    monkeypatch.setattr(persistent, "create_persistent", create)
    monkeypatch.setattr(persistent, "boot_persistent", lambda env, vm, spec: 0)
    assert run_persistent(RunSpec(ImageSource("localhost/img"), name="web")) == 0
    assert seen == [True]
    assert not being_made_here(NATIVE, "web")


def test_a_kept_vm_planted_as_a_link_is_not_read_locked_or_emptied(
    dirs: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    keep(elsewhere)
    dirs.mkdir(parents=True)
    (dirs / "web").symlink_to(elsewhere / "web")
    with pytest.raises(BootcBoxError, match="unreadable \\(it is a symbolic link\\)"):
        find_kept_vm(NATIVE, "web")
    assert remove_kept_vm(NATIVE, "web")
    assert not (dirs / "web").exists()
    assert sorted(p.name for p in (elsewhere / "web").iterdir()) == [CONFIG]


def test_a_vm_whose_tpm_cannot_run_here_is_not_made(
    dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before its image is installed, not after: nothing is left."""
    monkeypatch.setattr(tpm, "find_swtpm", lambda: None)
    # Whether this host has OVMF is not the question.
    monkeypatch.setattr(launch, "require_ovmf", lambda choice: None)
    made = []
    monkeypatch.setattr(persistent, "create_persistent", lambda *args: made.append(args))
    spec = RunSpec(ImageSource("localhost/img"), name="db", machine=MachineOptions(tpm=True))
    with pytest.raises(BootcBoxError, match="--tpm needs swtpm, which is not installed here"):
        run_persistent(spec)
    assert made == []
    assert not (dirs / "db").exists()


def test_a_stopped_kept_vm_is_listed_with_its_firmware_and_tpm(dirs: Path) -> None:
    keep(dirs, dataclasses.replace(VM, firmware="uefi-secure", tpm=True))
    [record] = kept_records(NATIVE, [])
    assert (record.state, record.firmware, record.tpm) == (VmState.STOPPED, "uefi-secure", True)
