"""QEMU: the one place a VM is assembled, from a QemuSpec whose `boot`
(boot.py) says how it boots, with extra disks and shares; and the one
place QEMU runs."""

import dataclasses
import enum
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootc_box.boot import FORMATS, ROOT_TAG, Boot, Disk, Firmware, FirmwareBoot, KernelBoot
from bootc_box.errors import BootcBoxError
from bootc_box.network import Network
from bootc_box.processes import last_line, last_line_of, start_process, wait_until
from bootc_box.programs import require_program
from bootc_box.qmp import qmp_execute
from bootc_box.tpm import TpmSpec

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"


class Accel(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"

    def qemu_args(self) -> list[str]:
        if self is Accel.KVM:
            return ["-machine", "q35,accel=kvm", "-cpu", "host"]
        # "max" gives the guest every feature TCG can emulate, like x86-64-v2+
        # baselines that current distribution kernels and glibc expect.
        return ["-machine", "q35,accel=tcg", "-cpu", "max"]


@dataclass(frozen=True)
class QemuSpec:
    accel: Accel
    memory_mib: int
    cpus: int
    boot: Boot
    network: Network
    console_log: Path
    credential_files: tuple[Path, ...] = ()
    # More virtiofs shares besides the root: (tag, virtiofsd socket).
    shares: tuple[tuple[str, Path], ...] = ()
    qmp_socket: Path | None = None
    # Wait for a saved state (migration.load_state) instead of booting.
    incoming: bool = False
    # Map all guest memory in QEMU before the guest starts. A save reads
    # every page, and on some hosts (nested, KVM-PVM) faulting them in one
    # by one as it goes costs seconds; populating them up front is one call.
    prealloc: bool = False
    # More disks besides a firmware boot's own (to-disk's output).
    disks: tuple[Disk, ...] = ()
    # virtio-serial ports (serial_exec.py): the name the guest sees in
    # /dev/virtio-ports, and the socket QEMU listens on for the host's end.
    ports: tuple[tuple[str, Path], ...] = ()
    # Files on fw_cfg: (name, file), as -fw_cfg name=NAME,file=FILE.
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    # A guest reboot resets the machine, which boots again (a VM that stays
    # up); else it ends QEMU, as a power-off does (a run of a command).
    reboot: bool = False
    # A TPM 2.0, served by swtpm (tpm.py), which machine.py starts first.
    tpm: TpmSpec | None = None

    @property
    def drives(self) -> tuple[Disk, ...]:
        """Every disk QEMU attaches, the one a firmware boots from first."""
        return (*self.boot.drives, *self.disks)

    def with_drives(self, drives: tuple[Disk, ...]) -> "QemuSpec":
        """This machine with `drives` (as many as `self.drives`) in their place."""
        assert len(drives) == len(self.drives)
        boot = self.boot
        if isinstance(boot, FirmwareBoot):
            boot = dataclasses.replace(boot, disk=drives[0])
        return dataclasses.replace(self, boot=boot, disks=drives[len(self.boot.drives) :])


_MEMORY = re.compile(r"(\d+)(?:([mg])(?:i?b)?)?", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """A memory size in MiB, from `2048`, `512M` or `2G` (as podman's --memory)."""
    match = _MEMORY.fullmatch(text.strip())
    if not match:
        raise BootcBoxError(
            f"invalid --memory {text!r}",
            "write it like --memory 2048, --memory 512M or --memory 4G",
        )
    mib = int(match[1]) * (1024 if (match[2] or "").lower() == "g" else 1)
    if mib < 256:
        raise BootcBoxError(
            f"--memory {text!r} is too small to boot", "give at least --memory 256M"
        )
    return mib


def option_value(value: object) -> str:
    """`value` inside a QEMU option list, where a comma ends the value unless doubled."""
    return str(value).replace(",", ",,")


def pflash_args(firmware: Firmware) -> list[str]:
    """UEFI firmware: its read-only code, and a variable store it may write
    (under Secure Boot, only in SMM: the guest's kernel cannot change the
    keys, and Debian's secboot code refuses to start without SMM)."""
    secure = ["-machine", "smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
    return [
        *(secure if firmware.secure else []),
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={option_value(firmware.code)}",
        "-drive", f"if=pflash,format=raw,unit=1,file={option_value(firmware.vars)}",
    ]  # fmt: skip


def qemu_argv(spec: QemuSpec, qemu: str = QEMU) -> list[str]:
    memory = f"{spec.memory_mib}M"
    argv = [
        qemu,
        *spec.accel.qemu_args(),
        "-nodefaults",
        "-m", memory,
        "-smp", str(spec.cpus),
        # vhost-user devices need guest memory that virtiofsd can map.
        "-object", f"memory-backend-memfd,id=mem,share=on,size={memory}"
        + (f",prealloc=on,prealloc-threads={spec.cpus}" if spec.prealloc else ""),
        "-numa", "node,memdev=mem",
        *_boot_args(spec.boot),
        *_virtiofs_args(spec.shares),
        *_disk_args(spec.drives, bootable=isinstance(spec.boot, FirmwareBoot)),
        # passt (network.py) is the network, and forwards SSH and the
        # published ports.
        "-netdev", "stream,id=net0,server=off,addr.type=unix,"
        f"addr.path={option_value(spec.network.socket)}",
        "-device", "virtio-net-pci,netdev=net0",
        "-display", "none",
        # Appended to, so that the log can be emptied under QEMU when it
        # grows too large (console.rotate_if_large).
        "-chardev", f"file,id=console,path={option_value(spec.console_log)},append=on",
        "-serial", "chardev:console",
        # A guest reboot ends the run instead of booting again.
        *([] if spec.reboot else ["-no-reboot"]),
        # A new generation ID on every start, restores included: the guest
        # reseeds its RNG instead of repeating its siblings' random numbers.
        "-device", "vmgenid",
        # The guest hands back the free memory it has in 2 MiB blocks (the
        # initramfs it unpacked, caches it dropped): its host pages go, and
        # a saved state need not hold them (a quarter less for the fixture).
        "-device", "virtio-balloon-pci,free-page-reporting=on",
    ]  # fmt: skip
    for path in spec.credential_files:
        argv += ["-smbios", f"type=11,path={option_value(path)}"]
    for name, path in spec.fw_cfg:
        argv += ["-fw_cfg", f"name={option_value(name)},file={option_value(path)}"]
    argv += _port_args(spec.ports)
    argv += _tpm_args(spec.tpm)
    if spec.qmp_socket:
        argv += ["-qmp", f"unix:{option_value(spec.qmp_socket)},server=on,wait=off"]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    return argv


def _tpm_args(tpm: TpmSpec | None) -> list[str]:
    """swtpm's control socket, and the TPM on the CRB interface, TPM 2.0's
    on current PCs (Linux's tpm_crb)."""
    if tpm is None:
        return []
    return [
        "-chardev", f"socket,id=tpm,path={option_value(tpm.socket)}",
        "-tpmdev", "emulator,id=tpm0,chardev=tpm",
        "-device", "tpm-crb,tpmdev=tpm0",
    ]  # fmt: skip


def _port_args(ports: tuple[tuple[str, Path], ...]) -> list[str]:
    if not ports:
        return []
    argv = ["-device", "virtio-serial-pci,id=ports"]
    for i, (name, path) in enumerate(ports):
        argv += [
            # wait=off: QEMU runs before the host connects; the guest's
            # writes wait for it (the port is closed until then).
            "-chardev", f"socket,id=port{i},path={option_value(path)},server=on,wait=off",
            "-device", f"virtserialport,bus=ports.0,chardev=port{i},name={name}",
        ]  # fmt: skip
    return argv


# Read by systemd-boot (>= 256) and appended to its entry's options: how a
# disk boot gets --karg without touching the disk.
BOOT_CMDLINE_EXTRA = "io.systemd.boot.kernel-cmdline-extra"


def _boot_args(boot: Boot) -> list[str]:
    match boot:
        case KernelBoot():
            return [
                "-kernel", str(boot.kernel),
                "-initrd", str(boot.initramfs),
                "-append", boot.cmdline,
                *_virtiofs_args(((ROOT_TAG, boot.root_socket),)),
            ]  # fmt: skip
        case FirmwareBoot():
            extra = option_value(f"{BOOT_CMDLINE_EXTRA}={boot.cmdline}")
            return [*pflash_args(boot.firmware), "-smbios", f"type=11,value={extra}"]


def probe_argv(qemu: str, boot: Boot, console: Path) -> list[str]:
    """The KVM probe (accel.py): `boot`'s kernel with no root, which panics
    at once, or its firmware with no disk, which writes to the console."""
    match boot:
        case KernelBoot():
            guest = ["-kernel", str(boot.kernel), "-append", "console=ttyS0 panic=-1"]
        case FirmwareBoot():
            guest = pflash_args(boot.firmware)
    return [
        qemu,
        *Accel.KVM.qemu_args(),
        "-m", "256",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        # file: takes the rest as the path, commas too: nothing to double.
        "-serial", f"file:{console}",
        *guest,
    ]  # fmt: skip


def _disk_args(disks: tuple[Disk, ...], *, bootable: bool) -> list[str]:
    args = []
    for index, disk in enumerate(disks):
        assert disk.backing or not disk.transient, "a transient disk is given through its overlay"
        # unmap: the guest's discards (fstrim, mkfs) keep a sparse file sparse.
        options = {"read-only": True} if disk.readonly else {"discard": "unmap"}
        node = {"node-name": f"disk{index}", **_blockdev(disk, options)}
        device = f"virtio-blk-pci,drive=disk{index}"
        if disk.serial:
            device += f",serial={disk.serial}"
        if bootable and index == 0:
            device += ",bootindex=0"
        # JSON, which needs no doubled commas: -blockdev's key=value form
        # reads backing=null as a reference to a node named "null".
        args += ["-blockdev", json.dumps(node), "-device", device]
    return args


def _blockdev(disk: Disk, options: dict[str, Any]) -> dict[str, Any]:
    """A -blockdev node for `disk`, in the format bootc-box knows, opening
    no file the disk's own bytes name: a qcow2 header's backing file gives
    way to the base bootc-box names, or to none (null)."""
    assert disk.format in FORMATS, f"a disk's format is known before it boots: {disk}"
    file = {"driver": "file", "filename": str(disk.path), **options}
    node = {"driver": disk.format, **options, "file": file}
    if disk.format == "qcow2":
        base = disk.backing
        node["backing"] = _blockdev(base, {"read-only": True}) if base else None
    return node


def _virtiofs_args(shares: tuple[tuple[str, Path], ...]) -> list[str]:
    args = []
    for tag, socket in shares:
        args += [
            "-chardev", f"socket,id={tag},path={option_value(socket)}",
            "-device", f"vhost-user-fs-pci,queue-size=1024,chardev={tag},tag={tag}",
        ]  # fmt: skip
    return args


def qemu_img_create_argv(
    path: Path, disk_format: str, size: int | None = None, backing: Disk | None = None
) -> list[str]:
    """A new disk image: `size` bytes, or an overlay on `backing`, which
    qemu-img opens in the format named (-F), never probing it."""
    argv = ["qemu-img", "create", "-q", "-f", disk_format]
    if backing:
        assert backing.format, "an overlay's base has a known format"
        argv += ["-b", str(backing.path), "-F", backing.format]
    return [*argv, str(path), *([str(size)] if size else [])]


def qemu_img_create(argv: list[str]) -> None:
    made = subprocess.run(argv, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise BootcBoxError(f"cannot create a disk image: {last_line_of(made.stderr)}")


def find_qemu() -> str | None:
    return shutil.which(QEMU)


def require_qemu() -> str:
    return require_program(QEMU)


def scratch_root() -> str:
    """Where a run's large scratch files go: on disk, not in the runtime
    directory's tmpfs, which is memory."""
    return os.environ.get("TMPDIR") or "/var/tmp"


@contextmanager
def transient_overlays(spec: QemuSpec) -> Iterator[QemuSpec]:
    """`spec` with each transient drive replaced by a new qcow2 overlay on
    it, which takes the guest's writes; the overlays are removed when the
    block ends. -blockdev has no snapshot=on: this is what it did, where it
    did it ($TMPDIR or /var/tmp, on disk rather than the runtime directory's
    tmpfs), with the base opened in its known format."""
    drives = spec.drives
    if not any(disk.transient for disk in drives):
        yield spec
        return
    with tempfile.TemporaryDirectory(prefix="bootc-box-overlays-", dir=scratch_root()) as directory:
        yield spec.with_drives(tuple(
            _new_overlay(disk, Path(directory, f"disk{i}.qcow2")) if disk.transient else disk
            for i, disk in enumerate(drives)
        ))  # fmt: skip


def _new_overlay(disk: Disk, path: Path) -> Disk:
    base = dataclasses.replace(disk, serial="", transient=False)
    qemu_img_create(qemu_img_create_argv(path, "qcow2", backing=base))
    return Disk(path, "qcow2", disk.serial, transient=True, backing=base)


@contextmanager
def start_qemu(spec: QemuSpec, log_file: Path, binary: str) -> Iterator["subprocess.Popen[bytes]"]:
    """Run the VM; on exit QEMU is terminated outright (machine.py powers a
    guest off first when it has something to keep)."""
    with (
        transient_overlays(spec) as overlaid,
        log_file.open("ab") as out,
        start_process(qemu_argv(overlaid, binary), stdout=out, stderr=out) as proc,
    ):
        yield proc


def monitor_answers(qmp_socket: Path) -> bool:
    try:
        qmp_execute(qmp_socket, "query-status", timeout=5)
    except (OSError, ValueError, BootcBoxError):
        return False
    return True


def wait_for_monitor(vm: "subprocess.Popen[bytes]", qmp_socket: Path, log_file: Path) -> None:
    """Wait until QEMU answers on its monitor, which it does only once the
    machine is built, with the kernel and initramfs read into guest memory."""
    wait_until(
        lambda: monitor_answers(qmp_socket),
        vm,
        timeout=60,
        on_exit=lambda status: BootcBoxError(
            f"QEMU exited with status {status}: {last_line(log_file)}"
        ),
        on_timeout=lambda: BootcBoxError("QEMU did not answer on its monitor within 60 s"),
    )


def power_off(vm: "subprocess.Popen[bytes]", qmp_socket: Path, grace: float) -> bool:
    """Press the VM's power button (ACPI, over QMP) and wait up to `grace`
    seconds for the guest to shut down; False when it did not (the caller
    then stops QEMU)."""
    if vm.poll() is not None:
        return True
    deadline = time.monotonic() + grace  # for asking and for shutting down together
    try:
        qmp_execute(qmp_socket, "system_powerdown", timeout=grace)
    except (OSError, ValueError, BootcBoxError) as e:
        log.warning("could not ask the VM to power off: %s", e)
        return False
    try:
        vm.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True
