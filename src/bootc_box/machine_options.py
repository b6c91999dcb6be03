"""What a user says about the machine, whatever it boots: one set of
options for `run`, to-disk's installer and a kept VM (bcvk's CommonVmOpts)."""

from dataclasses import dataclass, field

from bootc_box.accel import AccelChoice
from bootc_box.firmware import FirmwareChoice
from bootc_box.provision import Provision


@dataclass(frozen=True)
class MachineOptions:
    memory_mib: int = 2048
    cpus: int = 2
    # Added to the kernel's command line, after the image's own.
    kargs: tuple[str, ...] = ()
    accel: AccelChoice = AccelChoice.AUTO
    # Show the guest's console as it boots.
    console: bool = False
    # Seconds the guest gets to answer SSH after a cold boot.
    timeout: float = 600.0
    # What the guest is given at boot besides its login (provision.py).
    provision: Provision = field(default_factory=Provision)
    # A disk's UEFI firmware (--firmware); None: plain UEFI, or what a kept
    # VM was made with.
    firmware: FirmwareChoice | None = None
    # A software TPM 2.0 (--tpm/--no-tpm); None: none, or what a kept VM
    # was made with.
    tpm: bool | None = None

    @property
    def firmware_choice(self) -> FirmwareChoice:
        return self.firmware or FirmwareChoice.UEFI
