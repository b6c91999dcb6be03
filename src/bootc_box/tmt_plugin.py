"""tmt's `provision how: bootc-box`: a plan's tests run in a VM bootc-box
boots from a bootc image (in a box, or natively), reached over SSH with the
VM's own key and pinned host key, and removed when tmt is done with it.

    provision:
        how: bootc-box
        image: localhost/my-image

tmt finds the plugin through the `tmt.plugin` entry point of this package
(`pip install 'bootc-box[tmt]'`). The VM starts as `bootc-box run -d` would
start it, from launchers.py, as the pytest plugin's does."""

import dataclasses
import secrets
from pathlib import Path
from typing import Any, cast

import tmt.guest
import tmt.log
import tmt.steps
import tmt.steps.provision
import tmt.utils
from tmt._compat.pathlib import Path as TmtPath
from tmt.container import field
from tmt.guest import RebootMode, default_reboot_waiting
from tmt.utils import Command, ShellScript
from tmt.utils.wait import Waiting

from bootc_box.hostkeys import pinned_options
from bootc_box.launchers import (
    DEFAULT_BOX,
    DEFAULT_VOLUME,
    Launcher,
    LaunchFailed,
    box_launcher,
    launch,
    native_launcher,
    run_stop,
)
from bootc_box.ssh import generate_key


@dataclasses.dataclass(frozen=True)
class VmOptions:
    """The keys of a plan's `provision` that bootc-box's `run` takes."""

    image: str | None = None
    memory: str | None = None
    cpus: int | None = None
    karg: tuple[str, ...] = ()
    accel: str | None = None
    disk: Path | None = None
    to_disk: bool = False
    set_credential: tuple[str, ...] = ()
    load_credential: tuple[str, ...] = ()
    systemd_units: Path | None = None
    cloud_init: Path | None = None

    def check(self) -> None:
        """One line for what bootc-box could not run."""
        if self.disk is None and not self.image:
            raise ValueError("provision how: bootc-box needs an image: give image: IMAGE")
        if self.disk is not None and (self.image or self.to_disk):
            raise ValueError("give image (with to-disk: true to boot its disk) or disk, not both")
        for credential in self.load_credential:
            if not credential.partition(":")[2]:
                raise ValueError(f"load-credential {credential!r} names no file: give ID:PATH")
        for path in inputs(self):
            # A box is given each as -v PATH:PATH:ro, which these would break.
            if {":", ","} & set(str(path)):
                raise ValueError(f"{path}: a path with ':' or ',' cannot be shared into the box")
            if not path.exists():
                raise ValueError(f"{path} does not exist; check the path in the plan")


def memory_text(memory: str | int | None) -> str | None:
    """tmt's plans give memory in MiB (testcloud's memory: 2048); bootc-box
    takes that, or its own sizes (2G)."""
    if memory is None:
        return None
    text = str(memory).strip()
    return f"{text}M" if text.isdigit() else text


def run_options(options: VmOptions) -> list[str]:
    """`bootc-box run -d` options for the plan's keys; paths as given, made
    absolute by the plugin (a box sees them at the same paths: inputs())."""
    argv: list[str] = []
    for flag, value in (("--memory", options.memory), ("--cpus", options.cpus),
                        ("--accel", options.accel)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    for karg in options.karg:
        argv += ["--karg", karg]
    for credential in options.set_credential:
        argv += ["--set-credential", credential]
    for credential in options.load_credential:
        argv += ["--load-credential", credential]
    if options.systemd_units:
        argv += ["--systemd-units", str(options.systemd_units)]
    if options.cloud_init:
        argv += ["--cloud-init", str(options.cloud_init)]
    if options.disk:
        # The plan's disk is left as it was: the guest writes to an overlay.
        argv += ["--disk", str(options.disk), "--transient"]
    if options.to_disk:
        argv += ["--persistent"]
    return argv


def inputs(options: VmOptions) -> list[Path]:
    """The files the plan names, each once (podman refuses a path mounted
    twice), which a box is given read-only."""
    paths = [Path(c.partition(":")[2]) for c in options.load_credential]
    paths += [p for p in (options.systemd_units, options.cloud_init, options.disk) if p]
    return list(dict.fromkeys(paths))


def vm_options(keys: Any, anchor: Path) -> VmOptions:
    """The plan's keys (BootcBoxGuestData's, as the guest holds them: read
    one by one, as the guest's `facts` would ask the guest), paths made
    absolute from `anchor`."""
    return VmOptions(
        image=keys.image,
        memory=keys.memory,
        cpus=keys.cpus,
        karg=tuple(keys.karg),
        accel=keys.accel,
        disk=_path(keys.disk, anchor),
        to_disk=bool(keys.to_disk),
        set_credential=tuple(keys.set_credential),
        load_credential=tuple(_credential_file(c, anchor) for c in keys.load_credential),
        systemd_units=_path(keys.systemd_units, anchor),
        cloud_init=_path(keys.cloud_init, anchor),
    )


def _path(value: Any, anchor: Path) -> Path | None:
    """A plan's path, relative to its fmf tree (as tmt's own keys are)."""
    return anchor / str(value) if value not in (None, "") else None


def _credential_file(credential: str, anchor: Path) -> str:
    name, colon, path = credential.partition(":")
    return f"{name}:{anchor / path}" if colon and path else credential


@dataclasses.dataclass
class BootcBoxGuestData(tmt.guest.GuestSshData):
    _OPTIONLESS_FIELDS = (
        *tmt.guest.GuestSshData._OPTIONLESS_FIELDS,
        "container",
        "vm_name",
        "host_key",
        "stop_commands",
    )

    image: str | None = field(
        default=None, option=("-i", "--image"), metavar="IMAGE",
        help="The bootc image to boot (a name podman knows, or oci-archive:PATH).",
    )  # fmt: skip
    memory: str | None = field(
        default=None, option="--memory", metavar="SIZE",
        help="Guest memory: MiB (2048), or bootc-box's 2G.",
        normalize=lambda key_address, value, logger: memory_text(value),
    )  # fmt: skip
    cpus: int | None = field(
        default=None, option="--cpus", metavar="N", help="Guest CPUs.",
        normalize=tmt.utils.normalize_optional_int,
    )  # fmt: skip
    karg: list[str] = field(
        default_factory=list, option="--karg", multiple=True, metavar="ARG",
        help="Extra kernel argument (repeatable).", normalize=tmt.utils.normalize_string_list,
    )  # fmt: skip
    accel: str | None = field(
        default=None, option="--accel", metavar="auto|kvm|tcg",
        help="Accelerator (bootc-box's --accel).",
    )  # fmt: skip
    disk: str | None = field(
        default=None, option="--disk", metavar="PATH",
        help="Boot this disk image (e.g. from to-disk) instead of an image; left unchanged.",
    )  # fmt: skip
    to_disk: bool = field(
        default=False, option="--to-disk", is_flag=True,
        help="Boot the image installed to a disk (installed once, kept in the cache).",
    )  # fmt: skip
    box_image: str = field(
        default=DEFAULT_BOX, option="--box-image", metavar="IMAGE",
        help=f"The bootc-box image (default {DEFAULT_BOX}).",
    )  # fmt: skip
    cache_volume: str = field(
        default=DEFAULT_VOLUME, option="--cache-volume", metavar="VOLUME",
        help=f"podman volume for the box's /cache (default {DEFAULT_VOLUME}).",
    )  # fmt: skip
    native: bool = field(
        default=False, option="--native", is_flag=True,
        help="Run bootc-box on this host instead of in a box.",
    )  # fmt: skip
    set_credential: list[str] = field(
        default_factory=list, option="--set-credential", multiple=True, metavar="ID:VALUE",
        help="A systemd credential for the guest (repeatable).",
        normalize=tmt.utils.normalize_string_list,
    )  # fmt: skip
    load_credential: list[str] = field(
        default_factory=list, option="--load-credential", multiple=True, metavar="ID:PATH",
        help="A systemd credential from a file (repeatable).",
        normalize=tmt.utils.normalize_string_list,
    )  # fmt: skip
    systemd_units: str | None = field(
        default=None, option="--systemd-units", metavar="DIR",
        help="Unit files to add to the guest.",
    )  # fmt: skip
    cloud_init: str | None = field(
        default=None, option="--cloud-init", metavar="PATH",
        help="A cloud-init user-data file or NoCloud directory.",
    )  # fmt: skip

    # Set once the VM runs: what later steps (and `tmt run --last`) need,
    # and how to remove it (no podman query then: nothing may keep tmt's
    # clean-up from removing the VM).
    container: str | None = None
    vm_name: str | None = None
    host_key: str | None = None
    stop_commands: list[list[str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ProvisionBootcBoxData(BootcBoxGuestData, tmt.steps.provision.ProvisionStepData):
    pass


class GuestBootcBox(tmt.guest.GuestSsh):
    """A VM of bootc-box's; tmt reaches it over SSH, host key pinned."""

    _data_class = BootcBoxGuestData

    image: str | None
    box_image: str
    cache_volume: str
    native: bool
    to_disk: bool
    container: str | None
    vm_name: str | None
    host_key: str | None
    stop_commands: list[list[str]]

    def _options(self) -> VmOptions:
        anchor = Path(cast("tmt.steps.provision.Provision", self.parent).plan.anchor_path)
        return vm_options(self, anchor)

    def _launcher(self, name: str, options: VmOptions, key: Path) -> Launcher:
        if self.native:
            return native_launcher(name)
        return box_launcher(
            name,
            box_image=self.box_image,
            volume=self.cache_volume,
            shared=(key.parent, *inputs(options)),
            kept=bool(self.to_disk),
        )

    def start(self) -> None:
        if self.container:
            self.debug(f"VM {self.vm_name} of bootc-box is already running.")
            return
        options = self._options()
        try:
            options.check()
        except ValueError as e:
            raise tmt.utils.ProvisionError(f"bootc-box: {e}") from None
        key_dir = Path(self.guest_workdir) / "bootc-box"
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = key_dir / "id_ed25519"
        if not key.exists():
            generate_key(key_dir)
        self.key = [TmtPath(key)]
        name = f"tmt-bootc-box-{secrets.token_hex(4)}"
        launcher = self._launcher(name, options, key)
        what = str(options.disk) if options.disk else options.image
        self.info("bootc-box", f"booting {what}", "green")
        try:
            launched = launch(launcher, run_options(options), options.image, key)
        except LaunchFailed as e:
            raise tmt.utils.ProvisionError(str(e)) from None
        self.container, self.vm_name = name, launcher.vm
        self.stop_commands = [list(argv) for argv in launcher.stop]
        self.info("bootc-box", launched.summary or "VM up", "green")
        target = launched.ssh
        self.primary_address = self.topology_address = target.host
        self.port = target.port
        self.user = target.user
        self.host_key = target.host_key
        self.verbose("primary address", f"{target.host}:{target.port}", "green")

    @property
    def is_ssh_multiplexing_enabled(self) -> bool:
        # tmt checks that its SSH master connection is up right after
        # starting it, before its login is done, then again only 30 s later
        # (measured: 67 s instead of 34 s for one test with `connect`, twice
        # 30 s per plan): a login per command costs less, even under TCG.
        return False

    @property
    def _ssh_options(self) -> Command:
        # ssh takes the first value given for an option: the pinned host key
        # comes before tmt's defaults, which check no host key at all.
        pinned = pinned_options(self.host_key) if self.host_key else ()
        return Command(*(f"-o{key}={value}" for key, value in pinned)) + super()._ssh_options

    def reboot(
        self,
        mode: RebootMode = RebootMode.SOFT,
        command: Command | ShellScript | None = None,
        waiting: Waiting | None = None,
    ) -> bool:
        """A reboot as tmt does it (bootc-box boots the guest again in the
        same VM), looked for every 2 s; then tmt's work tree goes to the
        guest again: an image's /var and /tmp start fresh at each boot, and
        tmt's went with them."""
        # tmt looks every 30 s by default: most of a reboot here, where the
        # guest answers as soon as it is up again.
        waiting = dataclasses.replace(waiting or default_reboot_waiting(), tick=2.0)
        rebooted = super().reboot(mode=mode, command=command, waiting=waiting)  # type: ignore[call-overload]
        if rebooted:
            self.push()
        return bool(rebooted)

    def stop(self) -> None:
        super().stop()
        self.remove()

    def remove(self) -> None:
        if self.container:
            self.debug(f"Removing VM {self.vm_name} of bootc-box.")
            run_stop(self.stop_commands)
            self.container = None
            self.info("bootc-box", "VM removed", "green")


@tmt.steps.provides_method("bootc-box")
class ProvisionBootcBox(tmt.steps.provision.ProvisionPlugin[ProvisionBootcBoxData]):
    """
    A VM booted by bootc-box from a bootc image.

    .. code-block:: yaml

        provision:
            how: bootc-box
            image: localhost/my-image

    The VM runs in a bootc-box container (podman), or on this host with
    ``native: true``. It stays up through the guest's reboots
    (``tmt-reboot``), and is removed when tmt is done with it.
    """

    _data_class = ProvisionBootcBoxData
    _guest_class = GuestBootcBox

    def go(self, *, logger: tmt.log.Logger | None = None) -> None:
        super().go(logger=logger)
        data = BootcBoxGuestData.from_plugin(self)
        data.show(verbose=self.verbosity_level, logger=self._logger)
        self._guest = GuestBootcBox(
            logger=self._logger, data=data, name=self.name, parent=self.step
        )
        self._guest.start()
        self._guest.setup()
