"""The machine of one boot attempt, assembled in one place: what every
attempt of a run shares (Prepared), QEMU's spec for an attempt (vm_spec)
and the virtiofsd instances that serve its shares (file_servers). Whatever
a VM is given to attach (a disk, a share, firmware, a TPM) goes in here."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bootc_box.binds import bind_owner, bind_tag
from bootc_box.boot import Boot, Disk, KernelBoot
from bootc_box.boot_cache import BootFilesLease
from bootc_box.credentials import Login
from bootc_box.machine import FileServer
from bootc_box.network import Network
from bootc_box.qemu import Accel, QemuSpec
from bootc_box.run_spec import RunSpec, Transport
from bootc_box.serial_exec import gets_unit, serial_ports
from bootc_box.tpm import TpmSpec
from bootc_box.virtiofsd import VirtiofsdSpec


@dataclass(frozen=True)
class Prepared:
    """What every boot attempt of one run shares."""

    login: Login
    qemu: str
    accel: Accel
    # Chosen once; a kernel boot's root socket is each attempt's (in_dir).
    boot: Boot
    image_id: str = ""
    # An image run: the mounted image, and the hold of its kernel and
    # initramfs on the cache (taken for each boot until QEMU has read them).
    root: Path | None = None
    boot_lease: BootFilesLease | None = None
    # Over virtio-serial: the credentials that give the guest bootc-box's unit.
    transport: Transport = Transport.SSH
    exec_credentials: tuple[Path, ...] = ()
    # Over SSH, with the unit beside sshd for restored runs (serial_exec.py).
    agent: bool = False
    # --set-credential, --systemd-units...: the user's credentials, as files.
    provision_credentials: tuple[Path, ...] = ()
    # More disks: to-disk's output, --mount-disk-file's, --add-swap's.
    disks: tuple[Disk, ...] = ()
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    # --tpm: the directory swtpm keeps the TPM's state in.
    tpm_state: Path | None = None

    @property
    def has_ports(self) -> bool:
        """Whether the guest gets bootc-box's unit and its virtio-serial ports."""
        return gets_unit(self.transport, self.agent)

    def retaken(self) -> "Prepared":
        """Ready for another attempt: the boot files held again, after an
        earlier QEMU let go of them."""
        if self.boot_lease is None:
            return self
        files = self.boot_lease.take()
        assert isinstance(self.boot, KernelBoot)
        boot = dataclasses.replace(self.boot, kernel=files.kernel, initramfs=files.initramfs)
        return dataclasses.replace(self, boot=boot)


def bind_tags(spec: RunSpec) -> list[str]:
    return [bind_tag(i) for i in range(len(spec.binds))]


def vm_spec(
    spec: RunSpec,
    prepared: Prepared,
    workdir: Path,
    ssh_port: int,
    *,
    credentials: tuple[Path, ...] = (),
    incoming: bool = False,
    prealloc: bool = False,
) -> QemuSpec:
    """The machine of one boot attempt, its sockets and logs in `workdir`."""
    return QemuSpec(
        accel=prepared.accel,
        memory_mib=spec.machine.memory_mib,
        cpus=spec.machine.cpus,
        boot=prepared.boot.in_dir(workdir),
        network=Network(workdir / "network.sock", ssh_port, spec.publish, spec.allow_host_loopback),
        console_log=workdir / "console.log",
        credential_files=(
            *(credentials or prepared.login.credentials),
            *prepared.exec_credentials,
            *prepared.provision_credentials,
        ),
        shares=tuple((tag, workdir / f"{tag}.sock") for tag in bind_tags(spec)),
        qmp_socket=workdir / "qmp.sock",
        incoming=incoming,
        prealloc=prealloc,
        disks=prepared.disks,
        fw_cfg=prepared.fw_cfg,
        ports=serial_ports(workdir) if prepared.has_ports else (),
        reboot=spec.keeps_running,
        tpm=TpmSpec(prepared.tpm_state, workdir / "swtpm.sock") if prepared.tpm_state else None,
    )


def file_servers(
    spec: RunSpec, prepared: Prepared, machine: QemuSpec, workdir: Path
) -> tuple[FileServer, ...]:
    """virtiofsd for the image's root (on a kernel boot) and for each --bind."""
    root = []
    if isinstance(machine.boot, KernelBoot):
        assert prepared.root is not None, "a kernel boot's root is the mounted image"
        root.append(FileServer(
            VirtiofsdSpec(prepared.root, machine.boot.root_socket), workdir / "virtiofsd.log"
        ))  # fmt: skip
    binds = [
        FileServer(
            VirtiofsdSpec(
                bind.source, path, bind.readonly, host_edits=True, owner=bind_owner(bind)
            ),
            workdir / f"virtiofsd-{tag}.log",
        )
        for bind, (tag, path) in zip(spec.binds, machine.shares, strict=True)
    ]
    return (*root, *binds)
