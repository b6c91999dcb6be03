"""`run --persistent --name NAME IMAGE` and `start NAME`: the image is
installed once, as to-disk would (the cached base disk), and the VM gets its
own qcow2 overlay on it and its own UEFI variable store (kept_vms.py).
Stopping such a VM keeps them; `start` or the same `run` line boots them
again; `rm` deletes them."""

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

from bootc_box.base_disks import clone_overlay, recorded_disk, with_base_disk
from bootc_box.binds import parse_bind
from bootc_box.boot import Disk
from bootc_box.environment import Environment, probe_environment
from bootc_box.errors import BootcBoxError
from bootc_box.firmware import EFI_VARS
from bootc_box.kept_vms import (
    CONFIG,
    LOCK,
    OVERLAY,
    KeptVm,
    find_kept_vm,
    forget_stopped,
    making_vm,
    read_provision,
    write_provision,
)
from bootc_box.launch import require_devices, run_vm
from bootc_box.machine_options import MachineOptions
from bootc_box.provision import Provision
from bootc_box.publish import parse_publish
from bootc_box.records import to_json
from bootc_box.run_spec import DiskSource, ImageSource, RunSpec
from bootc_box.todisk import InstallSpec, disk_options, install, prepare_host
from bootc_box.tpm import TPM_STATE
from bootc_box.vms import (
    check_name,
    kept_vm_dir,
    kept_vms_dir,
    making_here,
)

log = logging.getLogger(__name__)


def run_persistent(spec: RunSpec) -> int:
    """Boot the VM NAME from its own disk, made first from IMAGE when it has none."""
    if not spec.name:
        raise BootcBoxError("--persistent needs --name NAME", "name the VM, e.g. --name web")
    name = check_name(spec.name)
    # Kept as given for `start`, which may run anywhere.
    spec = spec.absolute(Path.cwd())
    assert isinstance(spec.source, ImageSource), "a kept VM is made from an image"
    image = spec.source.image
    env = probe_environment()
    if not env.cache_kept:
        raise BootcBoxError(
            "--persistent keeps the VM's disk in /cache, and /cache is not a volume here",
            "add -v bootc-box:/cache to the podman run line",
        )
    vm = find_kept_vm(env, name)
    if vm is None:
        # Before the image is installed for a VM that could not boot here.
        require_devices(spec.machine, disk=True)
        with making_here(env, name):
            vm = create_persistent(env, spec, image)
    elif image not in (vm.image, vm.image_id):
        raise BootcBoxError(
            f"VM {name} keeps its state from {vm.image}, not {image}",
            f"start it with bootc-box start {name}, or remove it with bootc-box rm {name}",
        )
    return boot_persistent(env, vm, spec)


def create_persistent(env: Environment, spec: RunSpec, image: str) -> KeptVm:
    """The VM's overlay on the cached base disk of `image` (installed first
    when it is not cached) and its config, put in place whole while the base
    disk is held, so that no prune can take it in between."""
    assert spec.name
    # The installer's machine is this run's; the kargs and what the guest
    # is given at boot are the VM's own.
    installer = InstallSpec(
        image,
        pull=spec.pull,
        machine=dataclasses.replace(
            spec.machine, kargs=(), provision=Provision(), firmware=None, tpm=None
        ),
    )
    prepare_host(env, installer)
    options = disk_options(installer, env)
    vm = KeptVm(
        name=spec.name,
        image=image,
        image_id=options.image_id,
        disk_key=options.key,
        memory_mib=spec.machine.memory_mib,
        cpus=spec.machine.cpus,
        kargs=spec.machine.kargs,
        publish=tuple(str(p) for p in spec.publish),
        binds=tuple(str(b) for b in spec.binds),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        allow_host_loopback=spec.allow_host_loopback,
        firmware=spec.machine.firmware_choice.value,
        tpm=bool(spec.machine.tpm),
    )
    root = kept_vms_dir(env)

    def make(base: Path) -> None:
        with making_vm(root, vm.name) as partial:
            clone_overlay(base, options, partial / OVERLAY)
            (partial / CONFIG).write_text(to_json(vm))
            write_provision(partial, spec.machine.provision)
            try:
                partial.rename(root / vm.name)
            except OSError as e:
                raise BootcBoxError(f"VM {vm.name} was made by another run meanwhile",
                                    f"start it with bootc-box start {vm.name}") from e  # fmt: skip

    with_base_disk(env, options, lambda target: install(installer, options, target, env), make)
    log.info("Made VM %s, which keeps its state, from %s", vm.name, vm.image)
    return vm


def boot_persistent(env: Environment, vm: KeptVm, spec: RunSpec) -> int:
    directory = kept_vm_dir(env, vm.name)
    forget_stopped(env, vm.name)
    overlay = Disk(directory / OVERLAY, "qcow2", backing=recorded_disk(env, vm.disk_key))
    source = DiskSource(
        overlay,
        efi_vars=directory / EFI_VARS,
        lock=directory / LOCK,
        tpm_state=directory / TPM_STATE,
    )
    machine = with_kept_hardware(vm, spec.machine)
    return run_vm(dataclasses.replace(spec, source=source, label=vm.image, machine=machine))


def with_kept_hardware(vm: KeptVm, asked: MachineOptions) -> MachineOptions:
    """`asked` with the firmware and TPM the VM was made with, which its
    variable store and TPM state belong to: a run line that names others is
    refused."""
    kept = vm.machine
    made = given = ""
    if asked.firmware not in (None, kept.firmware):
        made, given = f"made with --firmware {vm.firmware}", "--firmware"
    elif asked.tpm not in (None, kept.tpm):
        made = "made with --tpm" if vm.tpm else "made without a TPM"
        given = "--no-tpm" if vm.tpm else "--tpm"
    if made:
        raise BootcBoxError(
            f"VM {vm.name} was {made}, and keeps it",
            f"leave {given} out to boot it, or remove it with bootc-box rm {vm.name}"
            " and make it again",
        )
    return dataclasses.replace(asked, firmware=kept.firmware, tpm=kept.tpm)


def run_start(names: tuple[str, ...], *, detach: bool = True) -> int:
    """`start NAME...`: boot VMs that keep their state again."""
    env = probe_environment()
    for name in names:
        vm = find_kept_vm(env, check_name(name))
        if vm is None:
            raise BootcBoxError(
                f"no VM named {name} keeps its state here",
                "only VMs made with run --persistent --name NAME start again; see bootc-box list",
            )
        machine = dataclasses.replace(vm.machine, provision=read_provision(env, vm.name))
        spec = RunSpec(
            ImageSource(vm.image), name=vm.name, detach=detach, machine=machine,
            publish=tuple(parse_publish(p) for p in vm.publish),
            allow_host_loopback=vm.allow_host_loopback,
            binds=tuple(parse_bind(b) for b in vm.binds),
        )  # fmt: skip
        status = boot_persistent(env, vm, spec)
        if status != 0:
            return status
    return 0
