import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bootc_box.boot import Disk, Firmware, FirmwareBoot, KernelBoot, kernel_cmdline
from bootc_box.errors import BootcBoxError
from bootc_box.network import Network
from bootc_box.qemu import (
    Accel,
    QemuSpec,
    option_value,
    parse_memory,
    qemu_argv,
    qemu_img_create_argv,
    transient_overlays,
)
from bootc_box.tpm import TpmSpec


def spec(**overrides: object) -> QemuSpec:
    values: dict[str, object] = {
        "accel": Accel.TCG,
        "memory_mib": 2048,
        "cpus": 2,
        "boot": KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("/run/root.sock")),
        "network": Network(Path("/run/network.sock"), 2222),
        "console_log": Path("/run/console.log"),
        "credential_files": (Path("/run/key.smbios"),),
    }
    values.update(overrides)
    return QemuSpec(**values)  # type: ignore[arg-type]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def blockdevs(argv: list[str]) -> list[Any]:
    return [json.loads(arg) for arg in option(argv, "-blockdev")]


def test_direct_kernel_boot_of_the_image_kernel() -> None:
    argv = qemu_argv(spec(), "qemu")
    assert option(argv, "-kernel") == ["/k/vmlinuz"]
    assert option(argv, "-initrd") == ["/k/initramfs.img"]
    assert option(argv, "-append") == [
        "console=ttyS0 systemd.journald.forward_to_console=1 "
        "root=virtiofs:rootfs systemd.volatile=overlay selinux=0"
    ]


def test_memory_is_shared_memfd_of_the_same_size() -> None:
    argv = qemu_argv(spec(memory_mib=4096), "qemu")
    assert option(argv, "-m") == ["4096M"]
    assert option(argv, "-object") == ["memory-backend-memfd,id=mem,share=on,size=4096M"]
    assert option(argv, "-numa") == ["node,memdev=mem"]


def test_a_run_that_saves_maps_all_guest_memory_up_front() -> None:
    argv = qemu_argv(spec(memory_mib=1024, cpus=2, prealloc=True), "qemu")
    assert option(argv, "-object") == [
        "memory-backend-memfd,id=mem,share=on,size=1024M,prealloc=on,prealloc-threads=2"
    ]


def test_virtiofs_root_device_uses_the_socket() -> None:
    argv = qemu_argv(spec(), "qemu")
    assert option(argv, "-chardev")[0] == "socket,id=rootfs,path=/run/root.sock"
    assert "tag=rootfs" in option(argv, "-device")[0]


def test_the_network_is_passts_socket_on_a_virtio_nic() -> None:
    argv = qemu_argv(spec(network=Network(Path("/run/a,b/net.sock"), 2222)), "qemu")
    assert option(argv, "-netdev") == [
        "stream,id=net0,server=off,addr.type=unix,addr.path=/run/a,,b/net.sock"
    ]
    assert "virtio-net-pci,netdev=net0" in option(argv, "-device")
    # Not QEMU's own user network, which maps 10.0.2.2 to the host's loopback.
    assert "-nic" not in argv
    assert not any("user" in arg.split(",")[0] for arg in option(argv, "-netdev"))


def test_credentials_are_passed_as_files_not_values() -> None:
    argv = qemu_argv(spec(), "qemu")
    assert option(argv, "-smbios") == ["type=11,path=/run/key.smbios"]
    assert not any("credential" in arg for arg in argv)


@pytest.mark.parametrize(
    ("accel", "machine", "cpu"),
    [(Accel.KVM, "q35,accel=kvm", "host"), (Accel.TCG, "q35,accel=tcg", "max")],
)
def test_accelerator_selects_machine_and_cpu(accel: Accel, machine: str, cpu: str) -> None:
    argv = qemu_argv(spec(accel=accel), "qemu")
    assert option(argv, "-machine") == [machine]
    assert option(argv, "-cpu") == [cpu]


def test_cmdline_roots_on_virtiofs_with_a_volatile_overlay_and_user_kargs_last() -> None:
    args = kernel_cmdline(("quiet", "systemd.unit=rescue.target")).split()
    assert "root=virtiofs:rootfs" in args
    assert "systemd.volatile=overlay" in args
    assert args[-2:] == ["quiet", "systemd.unit=rescue.target"]


@pytest.mark.parametrize(
    ("text", "mib"), [("2048", 2048), ("512M", 512), ("4G", 4096), ("4g", 4096), ("1GiB", 1024)]
)
def test_memory_sizes(text: str, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "2T", "-1G", "1.5G", "2B"])
def test_bad_memory_sizes_say_how_to_write_one(text: str) -> None:
    with pytest.raises(BootcBoxError, match="invalid --memory") as err:
        parse_memory(text)
    assert err.value.hint == "write it like --memory 2048, --memory 512M or --memory 4G"


def test_too_little_memory_is_refused() -> None:
    with pytest.raises(BootcBoxError, match="too small"):
        parse_memory("64M")


def test_each_share_gets_its_own_vhost_user_device() -> None:
    argv = qemu_argv(spec(shares=(("bind0", Path("/run/b0.sock")),)), "qemu")
    assert option(argv, "-chardev")[:2] == [
        "socket,id=rootfs,path=/run/root.sock",
        "socket,id=bind0,path=/run/b0.sock",
    ]
    assert option(argv, "-device")[1] == "vhost-user-fs-pci,queue-size=1024,chardev=bind0,tag=bind0"


def test_qmp_listens_on_a_socket_without_waiting_for_a_client() -> None:
    assert option(qemu_argv(spec(), "qemu"), "-qmp") == []
    argv = qemu_argv(spec(qmp_socket=Path("/run/qmp.sock")), "qemu")
    assert option(argv, "-qmp") == ["unix:/run/qmp.sock,server=on,wait=off"]


def test_every_start_gets_a_new_generation_id_and_a_restore_waits_for_its_state() -> None:
    booting, restoring = qemu_argv(spec(), "qemu"), qemu_argv(spec(incoming=True), "qemu")
    assert "vmgenid" in option(booting, "-device")
    assert "vmgenid" in option(restoring, "-device")
    assert "virtio-balloon-pci,free-page-reporting=on" in option(booting, "-device")
    assert option(booting, "-incoming") == []
    assert option(restoring, "-incoming") == ["defer"]
    # Otherwise the same machine: a state only loads into the machine it left.
    assert restoring[: len(booting)] == booting


def test_the_console_is_appended_to_so_it_can_be_emptied_under_qemu() -> None:
    argv = qemu_argv(spec(), "qemu")
    assert "file,id=console,path=/run/console.log,append=on" in option(argv, "-chardev")
    assert option(argv, "-serial") == ["chardev:console"]


ROOT_DISK = Disk(Path("/d/disk.qcow2"), "qcow2", serial="root")


def disk_boot(
    disk: Disk = ROOT_DISK, kargs: tuple[str, ...] = ("quiet",), **overrides: object
) -> QemuSpec:
    firmware = Firmware(Path("/fw/CODE.fd"), Path("/vm/efivars.fd"))
    return spec(boot=FirmwareBoot(firmware, disk, kargs), **overrides)


def test_a_disk_boots_under_uefi_with_no_kernel_or_root_share_of_ours() -> None:
    argv = qemu_argv(disk_boot(), "qemu")
    assert "-kernel" not in argv
    assert "-append" not in argv
    assert not any("vhost-user-fs" in a for a in argv)
    assert option(argv, "-drive") == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
        "if=pflash,format=raw,unit=1,file=/vm/efivars.fd",
    ]
    assert "virtio-blk-pci,drive=disk0,serial=root,bootindex=0" in option(argv, "-device")


def test_a_qcow2_disk_never_opens_a_file_its_header_names() -> None:
    # -blockdev, in JSON: its key=value form reads backing=null as a node named "null".
    assert blockdevs(qemu_argv(disk_boot(), "qemu")) == [{
        "driver": "qcow2", "node-name": "disk0", "discard": "unmap", "backing": None,
        "file": {"driver": "file", "filename": "/d/disk.qcow2", "discard": "unmap"},
    }]  # fmt: skip


def test_an_overlay_opens_the_base_bootc_box_names_read_only_in_its_format() -> None:
    base = Disk(Path("/cache/disks/k/disk.raw"), "raw")
    overlay = Disk(Path("/cache/vms/web/disk.qcow2"), "qcow2", serial="root", backing=base)
    (node,) = blockdevs(qemu_argv(disk_boot(overlay), "qemu"))
    assert node["file"]["filename"] == "/cache/vms/web/disk.qcow2"
    assert node["backing"] == {
        "driver": "raw", "read-only": True,
        "file": {"driver": "file", "filename": "/cache/disks/k/disk.raw", "read-only": True},
    }  # fmt: skip


def test_a_disk_boot_hands_kargs_to_systemd_boot_over_smbios() -> None:
    argv = qemu_argv(disk_boot(kargs=("a=1,2", "quiet")), "qemu")
    assert (
        "type=11,value=io.systemd.boot.kernel-cmdline-extra="
        "console=ttyS0 systemd.journald.forward_to_console=1 "
        "a=1,,2 quiet" in option(argv, "-smbios")
    )


def test_extra_disks_of_a_kernel_boot_have_their_serial_and_no_boot_index() -> None:
    output = Disk(Path("/out/.d,isk.partial"), "raw", serial="output")
    argv = qemu_argv(spec(disks=(output,)), "qemu")
    (node,) = blockdevs(argv)
    # JSON needs no doubled commas.
    assert (node["driver"], node["file"]["filename"]) == ("raw", "/out/.d,isk.partial")
    assert "backing" not in node
    assert option(argv, "-drive") == []
    assert "virtio-blk-pci,drive=disk0,serial=output" in option(argv, "-device")
    assert option(argv, "-kernel") == ["/k/vmlinuz"]


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_a_transient_disk_writes_to_an_overlay_of_its_own_for_each_start(
    tmp_path: Path, disk_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / f"disk,1.{disk_format}"
    subprocess.run(qemu_img_create_argv(path, disk_format, 1 << 20), check=True)
    disk = Disk(path, disk_format, serial="root", transient=True)
    with pytest.raises(AssertionError, match="overlay"):
        qemu_argv(disk_boot(disk), "qemu")
    with transient_overlays(disk_boot(disk)) as overlaid:
        (overlay,) = overlaid.drives
        assert overlay.serial == "root"
        assert overlay.backing == Disk(path, disk_format)
        info = subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(overlay.path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(info.stdout)["backing-filename-format"] == disk_format
        (node,) = blockdevs(qemu_argv(overlaid, "qemu"))
        assert (node["driver"], node["backing"]["file"]["filename"]) == ("qcow2", str(path))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_overlay_names_its_base_and_its_format() -> None:
    argv = qemu_img_create_argv(Path("/vm/disk.qcow2"), "qcow2", backing=Disk(Path("/b"), "qcow2"))
    assert argv == ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/b", "-F", "qcow2",
                    "/vm/disk.qcow2"]  # fmt: skip


def test_paths_in_option_lists_double_their_commas() -> None:
    argv = qemu_argv(
        spec(
            console_log=Path("/r,1/console.log"),
            boot=KernelBoot(Path("/k"), Path("/i"), Path("/r,1/root.sock")),
            credential_files=(Path("/r,1/key.smbios"),),
            qmp_socket=Path("/r,1/qmp.sock"),
        ),
        "qemu",
    )
    assert option(argv, "-chardev") == [
        "socket,id=rootfs,path=/r,,1/root.sock",
        "file,id=console,path=/r,,1/console.log,append=on",
    ]
    assert option(argv, "-smbios") == ["type=11,path=/r,,1/key.smbios"]
    assert option(argv, "-qmp") == ["unix:/r,,1/qmp.sock,server=on,wait=off"]


def test_option_values_double_their_commas() -> None:
    assert option_value(Path("/a,b/c")) == "/a,,b/c"
    assert option_value("plain") == "plain"


def test_a_transient_extra_disk_of_a_kernel_boot_gets_its_overlay_too(tmp_path: Path) -> None:
    path = tmp_path / "out.raw"
    subprocess.run(qemu_img_create_argv(path, "raw", 1 << 20), check=True)
    machine = spec(disks=(Disk(path, "raw", serial="output", transient=True),))
    with transient_overlays(machine) as overlaid:
        assert overlaid.boot == machine.boot
        (overlay,) = overlaid.disks
        assert (overlay.format, overlay.serial, overlay.backing) == ("qcow2", "output", Disk(path))


def test_only_a_firmware_boot_boots_from_a_disk_of_its_own() -> None:
    argv = qemu_argv(disk_boot(), "qemu")
    assert [d for d in option(argv, "-device") if "bootindex" in d] == [
        "virtio-blk-pci,drive=disk0,serial=root,bootindex=0"
    ]
    assert disk_boot().drives == (ROOT_DISK,)
    assert spec().drives == ()


def test_a_vm_that_stays_up_boots_again_after_a_guest_reboot_and_a_command_run_ends() -> None:
    assert "-no-reboot" in qemu_argv(spec(), "qemu")
    assert "-no-reboot" not in qemu_argv(spec(reboot=True), "qemu")


def test_a_saved_state_serves_vms_that_stay_up_and_runs_of_a_command_alike() -> None:
    from bootc_box.snapshots import snapshot_key  # noqa: PLC0415

    versions = {"qemu": "QEMU emulator version 10"}
    assert snapshot_key("id", spec(), versions) == snapshot_key("id", spec(reboot=True), versions)


def test_secure_boot_firmware_keeps_its_variables_behind_smm() -> None:
    firmware = Firmware(Path("/fw/SECBOOT.fd"), Path("/vm/efivars.fd"), secure=True)
    argv = qemu_argv(spec(boot=FirmwareBoot(firmware, ROOT_DISK)), "qemu")
    # Merged into the accelerator's -machine q35,... by QEMU.
    assert option(argv, "-machine")[1:] == ["smm=on"]
    assert option(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    assert option(argv, "-drive")[0].endswith("readonly=on,file=/fw/SECBOOT.fd")
    # Plain UEFI has neither.
    plain = qemu_argv(disk_boot(), "qemu")
    assert option(plain, "-global") == []
    assert len(option(plain, "-machine")) == 1


def test_a_tpm_is_swtpms_socket_on_the_crb_interface() -> None:
    tpm = TpmSpec(Path("/vm/tpm"), Path("/vm/boot-1/sw,tpm.sock"))
    argv = qemu_argv(spec(tpm=tpm), "qemu")
    assert "socket,id=tpm,path=/vm/boot-1/sw,,tpm.sock" in option(argv, "-chardev")
    assert option(argv, "-tpmdev") == ["emulator,id=tpm0,chardev=tpm"]
    assert "tpm-crb,tpmdev=tpm0" in option(argv, "-device")
    assert "-tpmdev" not in qemu_argv(spec(), "qemu")
