"""How a machine boots, chosen once per run and carried whole to qemu.py
(bcvk's BootMode): the image's own kernel with the image shared over
virtiofs as its root (KernelBoot), or UEFI firmware booting the first of
the machine's disks (FirmwareBoot). Also what both are made of: disks,
firmware, kernel command lines."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

ROOT_TAG = "rootfs"
# The disk formats bootc-box opens: others (vmdk, vhdx...) name more files.
FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class Disk:
    """A disk image on virtio-blk; the guest sees /dev/disk/by-id/virtio-SERIAL."""

    path: Path
    # raw or qcow2, as bootc-box made it or the user said; None until
    # disks.open_disk has found it. Never guessed from the file's bytes: a
    # raw disk's first bytes are its guest's.
    format: str | None = "raw"
    serial: str = ""
    # Writes go to a throwaway qcow2 overlay, never to the file: QEMU gets
    # the disk through qemu.transient_overlays.
    transient: bool = False
    # A qcow2 overlay's base, opened as said here; a name in the overlay's
    # header is never followed.
    backing: "Disk | None" = None
    # The guest may read it, not write it (a --cloud-init seed).
    readonly: bool = False


@dataclass(frozen=True)
class Firmware:
    """UEFI: the firmware's read-only code and the VM's own variable store."""

    code: Path
    vars: Path
    # Secure Boot: code that keeps its variables behind SMM, so that only
    # the firmware, never the guest's kernel, can change the keys.
    secure: bool = False


# The guest's journal on the console from the initramfs on (as bcvk's
# journal-stream unit does, without a unit in the image): when a boot fails
# early, `logs` and the error's console line say why (boot_failures.py).
JOURNAL_ON_CONSOLE = "systemd.journald.forward_to_console=1"


def kernel_cmdline(kargs: tuple[str, ...] = ()) -> str:
    base = [
        "console=ttyS0",
        JOURNAL_ON_CONSOLE,
        # dracut's virtiofs module mounts this tag as /sysroot.
        f"root=virtiofs:{ROOT_TAG}",
        # The image must stay untouched while /etc and /var (and the rest)
        # are writable: systemd puts a tmpfs overlay over the read-only root
        # in the initramfs, so every write is per-run and vanishes on exit.
        "systemd.volatile=overlay",
        # Image labels mean nothing on a virtiofs root.
        "selinux=0",
    ]
    return " ".join([*base, *kargs])


def disk_cmdline(kargs: tuple[str, ...] = ()) -> str:
    """What a disk boot adds to its boot entry's own options: the serial
    console, so that `logs` and --console show the boot as for an image."""
    return " ".join(["console=ttyS0", JOURNAL_ON_CONSOLE, *kargs])


@dataclass(frozen=True)
class KernelBoot:
    """The image's kernel and initramfs, booted directly, its root file
    system the image itself, served by virtiofsd on `root_socket`."""

    kernel: Path
    initramfs: Path
    root_socket: Path
    kargs: tuple[str, ...] = ()
    kver: str = ""

    # The root is a throwaway overlay: nothing is lost by stopping QEMU.
    keeps_writes: ClassVar[bool] = False

    @property
    def cmdline(self) -> str:
        return kernel_cmdline(self.kargs)

    @property
    def drives(self) -> tuple[Disk, ...]:
        return ()

    def describe(self) -> str:
        return f"kernel {self.kver}"

    def in_dir(self, workdir: Path) -> "KernelBoot":
        """This boot with its root served in one boot attempt's directory."""
        return dataclasses.replace(self, root_socket=workdir / "rootfs.sock")

    def placeholders(self) -> "KernelBoot":
        """This boot with the paths that differ from run to run left out."""
        return dataclasses.replace(
            self,
            kernel=Path("kernel"),
            initramfs=Path("initramfs"),
            root_socket=Path("rootfs.sock"),
            kver="",
        )


@dataclass(frozen=True)
class FirmwareBoot:
    """UEFI firmware booting `disk`, whose boot loader finds the kernel;
    `kargs` are added to its boot entry's options (systemd-boot >= 256)."""

    firmware: Firmware
    disk: Disk
    kargs: tuple[str, ...] = ()

    # A disk keeps what the guest writes: a stop is always a power-off.
    keeps_writes: ClassVar[bool] = True

    @property
    def cmdline(self) -> str:
        return disk_cmdline(self.kargs)

    @property
    def drives(self) -> tuple[Disk, ...]:
        return (self.disk,)

    def describe(self) -> str:
        return "UEFI"

    def in_dir(self, workdir: Path) -> "FirmwareBoot":
        return self

    def placeholders(self) -> "FirmwareBoot":
        return dataclasses.replace(
            self,
            firmware=Firmware(Path("code"), Path("vars")),
            disk=dataclasses.replace(self.disk, path=Path("disk"), backing=None),
        )


Boot = KernelBoot | FirmwareBoot
