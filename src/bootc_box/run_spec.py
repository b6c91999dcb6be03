"""What a run boots and how: the one request run, to-disk's installer and a
kept VM's start hand to launch.run_vm."""

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.binds import Bind
from bootc_box.boot import Disk
from bootc_box.images import PullOptions, parse_image_ref
from bootc_box.machine_options import MachineOptions
from bootc_box.publish import Publish


class WarmStarts(enum.Enum):
    """What a run does with saved states (--warm)."""

    # Restore one when there is one; save one once this image and machine
    # has been booted before: a state only a later run can use is not
    # worth its save to an image booted once (a CI build's).
    AUTO = "auto"
    # As AUTO, and save after the very first boot too.
    ALWAYS = "always"
    NEVER = "never"


class Transport(enum.Enum):
    """How a command reaches the guest (--exec-transport): over SSH, or
    over virtio-serial for images without sshd (serial_exec.py)."""

    AUTO = "auto"
    SSH = "ssh"
    SERIAL = "serial"


@dataclass(frozen=True)
class ImageSource:
    """An image to boot by its own kernel, with the image as the root."""

    image: str


@dataclass(frozen=True)
class DiskSource:
    """A disk to boot under UEFI."""

    disk: Disk
    # A kept VM's: its own UEFI variable store, its TPM's state directory,
    # and the lock it holds while it runs, so that it runs once at a time.
    # Else a fresh store and TPM per run.
    efi_vars: Path | None = None
    lock: Path | None = None
    tpm_state: Path | None = None


@dataclass(frozen=True)
class RunSpec:
    source: ImageSource | DiskSource
    command: tuple[str, ...] = ()
    machine: MachineOptions = field(default_factory=MachineOptions)
    tty: bool = False
    pull: PullOptions = field(default_factory=PullOptions)
    name: str | None = None
    detach: bool = False
    publish: tuple[Publish, ...] = ()
    # The guest may reach the host's loopback at 10.0.2.2 (network.py).
    allow_host_loopback: bool = False
    binds: tuple[Bind, ...] = ()
    ssh_key: Path | None = None
    # Seconds a guest gets to shut down after its power button is pressed;
    # below podman stop's default 10 s so the clean-up still fits.
    stop_timeout: float = 8.0
    warm: WarmStarts = WarmStarts.AUTO
    # More disks to attach (to-disk's output).
    disks: tuple[Disk, ...] = ()
    # What the run boots, in messages and `list`, when not IMAGE or the disk.
    label: str = ""
    exec_transport: Transport = Transport.AUTO
    # The command's stdin is /dev/null (podman run without -i): it reads nothing.
    no_input: bool = False

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        if isinstance(self.source, DiskSource):
            return f"disk {self.source.disk.path}"
        return self.source.image

    @property
    def needs_login(self) -> bool:
        """A shell, or a VM that stays up: what only sshd can give."""
        return self.detach or not self.command

    @property
    def needs_no_login(self) -> bool:
        """A command that asks nothing of an SSH login: no terminal, no
        input, no VM that stays up, no transport named. A restored guest
        with bootc-box's agent runs it over virtio-serial (serial_exec.py)."""
        return (
            bool(self.command)
            and not (self.tty or self.keeps_running)
            and self.no_input
            and self.exec_transport is Transport.AUTO
        )

    @property
    def keeps_running(self) -> bool:
        """No command and no terminal: the VM stays up until it is stopped."""
        return self.detach or not (self.command or self.tty)

    def absolute(self, cwd: Path) -> "RunSpec":
        """This spec with every path the user gave made absolute against
        `cwd`: a detached supervisor runs in /, where `--ssh-key ./k` names
        nothing, and a kept VM starts again from anywhere."""

        def absolute(path: Path | None) -> Path | None:
            return None if path is None else cwd / path

        source = self.source
        if isinstance(source, DiskSource):
            source = dataclasses.replace(
                source, disk=dataclasses.replace(source.disk, path=cwd / source.disk.path)
            )
        elif (ref := parse_image_ref(source.image)).transport:
            source = ImageSource(f"{ref.transport}:{cwd / ref.path}{ref.name[len(ref.path) :]}")
        pull = self.pull
        return dataclasses.replace(
            self,
            source=source,
            ssh_key=absolute(self.ssh_key),
            pull=dataclasses.replace(
                pull, cert_dir=absolute(pull.cert_dir), authfile=absolute(pull.authfile)
            ),
            binds=tuple(dataclasses.replace(b, source=cwd / b.source) for b in self.binds),
        )


def what_to_boot(
    disk: Path | None, image: str | None, args: tuple[str, ...]
) -> tuple[str, tuple[str, ...]] | None:
    """`run`'s IMAGE and COMMAND from its operands; with --disk no IMAGE is
    named, so what was taken for one begins the command. None: no IMAGE."""
    if disk:
        image, args = str(disk), (image, *args) if image else args
    if image is None:
        return None
    return image, args[1:] if args[:1] == ("--",) else args
