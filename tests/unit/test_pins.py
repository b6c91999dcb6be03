# ruff: noqa: E501  (QEMU's JSON options are pinned whole, as QEMU gets them)
"""Pins: the QEMU lines and the saved-state key of two machines, as literals.

A redesign of how specs are built must leave what QEMU is given, and the
key under which saved states are found, exactly as they were: a changed
key orphans every saved state in users' caches."""

import dataclasses
from pathlib import Path

from bootc_box.boot import Disk, Firmware, FirmwareBoot, KernelBoot
from bootc_box.network import Network
from bootc_box.publish import parse_publish
from bootc_box.qemu import Accel, QemuSpec, qemu_argv
from bootc_box.snapshots import machine_argv, snapshot_key

# Both machines' lines from the network to the balloon.
NETWORK_TO_VMGENID = [
    "-netdev",
    "stream,id=net0,server=off,addr.type=unix,addr.path=/w/network.sock",
    "-device",
    "virtio-net-pci,netdev=net0",
    "-display",
    "none",
    "-chardev",
    "file,id=console,path=/w/console.log,append=on",
    "-serial",
    "chardev:console",
    "-no-reboot",
    "-device",
    "vmgenid",
    "-device",
    "virtio-balloon-pci,free-page-reporting=on",
]

KERNEL_BOOT_ARGV = [
    "qemu",
    "-machine",
    "q35,accel=tcg",
    "-cpu",
    "max",
    "-nodefaults",
    "-m",
    "1024M",
    "-smp",
    "1",
    "-object",
    "memory-backend-memfd,id=mem,share=on,size=1024M",
    "-numa",
    "node,memdev=mem",
    "-kernel",
    "/b/vmlinuz",
    "-initrd",
    "/b/initramfs.img",
    "-append",
    "console=ttyS0 systemd.journald.forward_to_console=1 root=virtiofs:rootfs systemd.volatile=overlay selinux=0 quiet",
    "-chardev",
    "socket,id=rootfs,path=/w/rootfs.sock",
    "-device",
    "vhost-user-fs-pci,queue-size=1024,chardev=rootfs,tag=rootfs",
    "-chardev",
    "socket,id=bind0,path=/w/bind0.sock",
    "-device",
    "vhost-user-fs-pci,queue-size=1024,chardev=bind0,tag=bind0",
    "-blockdev",
    '{"node-name": "disk0", "driver": "raw", "discard": "unmap", "file": {"driver": "file", "filename": "/o/out.raw", "discard": "unmap"}}',
    "-device",
    "virtio-blk-pci,drive=disk0,serial=output",
    *NETWORK_TO_VMGENID,
    "-smbios",
    "type=11,path=/w/a.smbios",
    "-smbios",
    "type=11,path=/w/b.smbios",
    "-qmp",
    "unix:/w/qmp.sock,server=on,wait=off",
]

DISK_BOOT_ARGV = [
    "qemu",
    "-machine",
    "q35,accel=kvm",
    "-cpu",
    "host",
    "-nodefaults",
    "-m",
    "2048M",
    "-smp",
    "2",
    "-object",
    "memory-backend-memfd,id=mem,share=on,size=2048M",
    "-numa",
    "node,memdev=mem",
    "-drive",
    "if=pflash,format=raw,unit=0,readonly=on,file=/f/CODE.fd",
    "-drive",
    "if=pflash,format=raw,unit=1,file=/v/efivars.fd",
    "-smbios",
    "type=11,value=io.systemd.boot.kernel-cmdline-extra=console=ttyS0 systemd.journald.forward_to_console=1 a=b",
    "-blockdev",
    '{"node-name": "disk0", "driver": "qcow2", "discard": "unmap", "file": {"driver": "file", "filename": "/v/disk.qcow2", "discard": "unmap"}, "backing": {"driver": "raw", "read-only": true, "file": {"driver": "file", "filename": "/d/base.raw", "read-only": true}}}',
    "-device",
    "virtio-blk-pci,drive=disk0,bootindex=0",
    *NETWORK_TO_VMGENID,
    "-smbios",
    "type=11,path=/w/a.smbios",
    "-qmp",
    "unix:/w/qmp.sock,server=on,wait=off",
]

# What a saved state is keyed by: the same line with what differs from run
# to run (paths under the run's directory, ports) put as placeholders.
PER_RUN = {
    "/b/vmlinuz": "kernel",
    "/b/initramfs.img": "initramfs",
    "socket,id=rootfs,path=/w/rootfs.sock": "socket,id=rootfs,path=rootfs.sock",
    "socket,id=bind0,path=/w/bind0.sock": "socket,id=bind0,path=bind0.sock",
    "stream,id=net0,server=off,addr.type=unix,addr.path=/w/network.sock": (
        "stream,id=net0,server=off,addr.type=unix,addr.path=network.sock"
    ),
    "file,id=console,path=/w/console.log,append=on": "file,id=console,path=console.log,append=on",
    "type=11,path=/w/a.smbios": "type=11,path=credential-0",
    "type=11,path=/w/b.smbios": "type=11,path=credential-1",
    "unix:/w/qmp.sock,server=on,wait=off": "unix:qmp.sock,server=on,wait=off",
}
SAVED_MACHINE_ARGV = [PER_RUN.get(arg, arg) for arg in KERNEL_BOOT_ARGV]


def kernel_machine() -> QemuSpec:
    return QemuSpec(
        accel=Accel.TCG,
        memory_mib=1024,
        cpus=1,
        boot=KernelBoot(
            Path("/b/vmlinuz"), Path("/b/initramfs.img"), Path("/w/rootfs.sock"), ("quiet",), "6.1"
        ),
        network=Network(Path("/w/network.sock"), 2222, (parse_publish("8080:80"),)),
        console_log=Path("/w/console.log"),
        credential_files=(Path("/w/a.smbios"), Path("/w/b.smbios")),
        shares=(("bind0", Path("/w/bind0.sock")),),
        qmp_socket=Path("/w/qmp.sock"),
        disks=(Disk(Path("/o/out.raw"), "raw", serial="output"),),
    )


def disk_machine() -> QemuSpec:
    return dataclasses.replace(
        kernel_machine(),
        accel=Accel.KVM,
        memory_mib=2048,
        cpus=2,
        boot=FirmwareBoot(
            Firmware(Path("/f/CODE.fd"), Path("/v/efivars.fd")),
            Disk(Path("/v/disk.qcow2"), "qcow2", backing=Disk(Path("/d/base.raw"), "raw")),
            ("a=b",),
        ),
        network=Network(Path("/w/network.sock"), 2223),
        credential_files=(Path("/w/a.smbios"),),
        shares=(),
        disks=(),
    )


def test_a_kernel_boot_gives_qemu_this_line() -> None:
    assert qemu_argv(kernel_machine(), "qemu") == KERNEL_BOOT_ARGV


def test_a_disk_boot_gives_qemu_this_line() -> None:
    assert qemu_argv(disk_machine(), "qemu") == DISK_BOOT_ARGV


def test_a_saved_state_is_keyed_by_this_line_and_this_key() -> None:
    assert machine_argv(kernel_machine()) == SAVED_MACHINE_ARGV
    assert (
        snapshot_key("sha256:abc", kernel_machine(), {"qemu": "9"})
        # Changed on purpose for the free page reporting balloon: states
        # saved before it boot cold once.
        == "600ad5e321bbff6ba7742b49500773cd"
    )
