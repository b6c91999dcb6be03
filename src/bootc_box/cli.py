"""The command line: click only; each command hands a spec to its run_* function."""

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.shell_completion import CompletionItem, get_completion_class

from bootc_box import __version__
from bootc_box.accel import AccelChoice
from bootc_box.binds import parse_bind
from bootc_box.boot import FORMATS, Disk
from bootc_box.bootable import run_images
from bootc_box.cache import run_cache_ls, run_cache_prune
from bootc_box.disks import checked_size, parse_size
from bootc_box.doctor import run_doctor
from bootc_box.environment import probe_environment
from bootc_box.errors import EXIT_TOOL_FAILED
from bootc_box.firmware import FIRMWARE_CHOICES, parse_firmware
from bootc_box.images import PullOptions, PullPolicy, run_pull
from bootc_box.launch import run_vm
from bootc_box.machine_options import MachineOptions
from bootc_box.manage import (
    run_inspect,
    run_list,
    run_logs,
    run_rm,
    run_ssh,
    run_ssh_config,
    run_stop,
    vm_names,
)
from bootc_box.options import bare_to_true, first_operand, wants_debug
from bootc_box.persistent import run_persistent, run_start
from bootc_box.programs import as_user_error
from bootc_box.provision import parse_provision
from bootc_box.publish import parse_publish
from bootc_box.qemu import parse_memory
from bootc_box.run_spec import (
    DiskSource,
    ImageSource,
    RunSpec,
    Transport,
    WarmStarts,
    what_to_boot,
)
from bootc_box.signals import Terminated, raise_on_sigterm
from bootc_box.terminal import stdin_is_null
from bootc_box.todisk import FILESYSTEMS, InstallSpec, ToDiskSpec, run_to_disk
from bootc_box.transfer import run_cp
from bootc_box.virtiofsd import SANDBOX_CHOICES, SANDBOX_VARIABLE

log = logging.getLogger("bootc_box")
F = TypeVar("F", bound=Callable[..., Any])
PROG = "bootc-box"
# What click's shell completion scripts set when they ask for completions.
COMPLETE_VARIABLE = "_BOOTC_BOX_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def complete_vm_name(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        names = vm_names(probe_environment())
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is at each message: a live progress line
    stands in for it, to keep log lines above itself."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "bootc-box: " + ("warning: " if record.levelno == logging.WARNING else "")
        return prefix + super().format(record)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show debug messages and tracebacks.")
@click.option(
    "--virtiofsd-sandbox",
    type=click.Choice(SANDBOX_CHOICES),
    default="auto",
    show_default=True,
    envvar=SANDBOX_VARIABLE,
    help="How virtiofsd confines itself; auto: the strongest sandbox that works, never none. "
    "none runs it unconfined: only where no sandbox can work, and trusting the guest.",
)
@click.version_option(__version__, prog_name="bootc-box")
@click.pass_context
def cli(ctx: click.Context, debug: bool, virtiofsd_sandbox: str) -> None:
    """Boot bootc container images as virtual machines.

    \b
    Examples:
      bootc-box run quay.io/fedora/fedora-bootc:42 -- systemctl is-system-running
      bootc-box run -d --name web -p 8080:80 localhost/my-image
      bootc-box ssh web -- journalctl -b
    """
    ctx.obj = debug
    # Read where virtiofsd starts: in this process, a detached supervisor, or
    # a re-run under podman unshare.
    os.environ[SANDBOX_VARIABLE] = virtiofsd_sandbox
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def seconds_option(*names: str, default: int, help: str, minimum: int = 0) -> Callable[[F], F]:
    return click.option(
        *names, default=default, show_default=True, type=click.IntRange(minimum), help=help
    )


def with_options(command: F, options: list[Callable[[F], F]]) -> F:
    """`command` with `options`, which --help lists in this order."""
    for option in reversed(options):
        command = option(command)
    return command


def registry_options(command: F) -> F:
    """How to reach a registry: shared by `run` and `pull`."""
    return with_options(
        command,
        [
            click.option(
                "--tls-verify",
                type=click.BOOL,
                default=None,
                help="Verify the registry's TLS certificate; --tls-verify=false skips it "
                "[default: verify, unless registries.conf marks the registry insecure].",
            ),
            click.option(
                "--cert-dir",
                type=click.Path(path_type=Path),
                help="Directory with the registry's CA (ca.crt), mounted into the box.",
            ),
            click.option(
                "--authfile",
                type=click.Path(path_type=Path),
                envvar="REGISTRY_AUTH_FILE",
                help="Registry credentials from podman login [env: REGISTRY_AUTH_FILE].",
            ),
        ],
    )


def value_options(command: click.Command) -> set[str]:
    """The command's options that take a value (--memory, -m)."""
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }


class _PodmanStyle(click.Command):
    """Takes `--tls-verify` bare as podman does, besides `--tls-verify=false`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_to_true(args, "--tls-verify", value_options(self)))


@cli.command(cls=_PodmanStyle)
@registry_options
@click.argument("image")
def pull(
    *, tls_verify: bool | None, cert_dir: Path | None, authfile: Path | None, image: str
) -> None:
    """Pull IMAGE from a registry into the box's store (the /cache volume).

    \b
    Example:
      bootc-box pull --authfile auth.json registry.example.com/team/os:latest
    """
    sys.exit(run_pull(image, PullOptions(PullPolicy.ALWAYS, tls_verify, cert_dir, authfile)))


def machine_options(command: F) -> F:
    """The options of the VM a command boots (run, and to-disk's installer),
    handed to it as one `machine` (MachineOptions), and --pull."""

    @functools.wraps(command)
    def with_machine(
        *,
        memory: str,
        cpus: int,
        kargs: tuple[str, ...],
        accel: str,
        console: bool,
        timeout: int,
        **rest: Any,
    ) -> Any:
        machine = MachineOptions(
            parse_memory(memory), cpus, kargs, AccelChoice(accel), console, float(timeout)
        )
        return command(machine=machine, **rest)

    with_machine = with_options(
        with_machine,
        [
            click.option(
                "--memory", "-m", default="2G", show_default=True, help="Guest memory (4G, 512M)."
            ),
            click.option(
                "--cpus", default=2, show_default=True, type=click.IntRange(1), help="Guest CPUs."
            ),
            click.option(
                "--karg", "kargs", multiple=True, help="Extra kernel argument (repeatable)."
            ),
            click.option(
                "--accel",
                type=click.Choice([a.value for a in AccelChoice]),
                default="auto",
                show_default=True,
                help="auto: KVM when it can run the guest, else TCG with a warning.",
            ),
            click.option(
                "--console", is_flag=True, help="Show the guest's serial console on stderr."
            ),
            seconds_option(
                "--timeout",
                default=600,
                minimum=1,
                help="Seconds to wait for the guest to answer SSH.",
            ),
            click.option(
                "--pull",
                "pull_policy",
                type=click.Choice([p.value for p in PullPolicy]),
                default="missing",
                show_default=True,
                help="When to pull IMAGE from its registry, as podman run --pull.",
            ),
        ],
    )
    return cast(F, with_machine)


def provision_options(command: F) -> F:
    """What the guest is given at boot besides its login (provision.py),
    folded into the command's `machine`."""

    @functools.wraps(command)
    def with_provision(
        *,
        machine: MachineOptions,
        set_credentials: tuple[str, ...],
        load_credentials: tuple[str, ...],
        units_dir: Path | None,
        disk_files: tuple[str, ...],
        swap: str | None,
        host_storage: bool,
        ignition: Path | None,
        cloud_init: Path | None,
        **rest: Any,
    ) -> Any:
        provision = parse_provision(
            set_credentials=set_credentials,
            load_credentials=load_credentials,
            units_dir=units_dir,
            disk_files=disk_files,
            swap=swap,
            host_storage=host_storage,
            ignition=ignition,
            cloud_init=cloud_init,
            cwd=Path.cwd(),
        )
        return command(machine=dataclasses.replace(machine, provision=provision), **rest)

    with_provision = with_options(
        with_provision,
        [
            click.option(
                "--set-credential",
                "set_credentials",
                multiple=True,
                metavar="ID:VALUE",
                help="Give the guest systemd credential ID (C escapes read; repeatable).",
            ),
            click.option(
                "--load-credential",
                "load_credentials",
                multiple=True,
                metavar="ID:PATH",
                help="Give the guest systemd credential ID with PATH's bytes (repeatable).",
            ),
            click.option(
                "--systemd-units",
                "units_dir",
                type=click.Path(path_type=Path),
                metavar="DIR",
                help="Add DIR's unit files (or DIR/system's) to the guest, enabled by their"
                " [Install] section; the image is not changed.",
            ),
            click.option(
                "--mount-disk-file",
                "disk_files",
                multiple=True,
                metavar="FILE[:NAME[:FORMAT]]",
                help="Attach FILE as /dev/disk/by-id/virtio-NAME (default: FILE's name; raw, or"
                " qcow2 for FILE.qcow2; repeatable). The run boots cold.",
            ),
            click.option(
                "--add-swap",
                "swap",
                metavar="SIZE",
                help="Give the guest a swap disk of SIZE (e.g. 2G). The run boots cold.",
            ),
            click.option(
                "--bind-storage-ro",
                "host_storage",
                is_flag=True,
                help="Share the host's image store, read-only, at /run/host-container-storage,"
                " where podman in the guest finds the host's images. The guest sees them all.",
            ),
            click.option(
                "--ignition",
                type=click.Path(path_type=Path),
                metavar="FILE",
                help="Hand the guest an Ignition config on fw_cfg (opt/com.coreos/config).",
            ),
            click.option(
                "--cloud-init",
                type=click.Path(path_type=Path),
                metavar="PATH",
                help="Give the guest's cloud-init a NoCloud seed: PATH is a user-data file or a"
                " directory with user-data and meta-data. The run boots cold.",
            ),
        ],
    )
    return cast(F, with_provision)


@cli.command(cls=_PodmanStyle, context_settings={"allow_interspersed_args": False})
@machine_options
@provision_options
@click.option("--detach", "-d", is_flag=True, help="Run the VM in the background; print its name.")
@click.option("--name", help="Name the VM (default: vm-<random>).")
@click.option(
    "--publish",
    "-p",
    multiple=True,
    metavar="[IP:]HOSTPORT:GUESTPORT",
    help="Forward a port to the guest, on 127.0.0.1 unless IP is given (repeatable).",
)
@click.option(
    "--allow-host-loopback",
    is_flag=True,
    help="Let the guest reach the box's 127.0.0.1 at 10.0.2.2 (closed by default).",
)
@click.option(
    "--bind",
    "binds",
    multiple=True,
    metavar="HOSTDIR:GUESTDIR[:ro]",
    help="Share a directory with the guest, mounted at boot (repeatable).",
)
@click.option(
    "--ssh-key",
    type=click.Path(path_type=Path),
    help="Log in with this private key (FILE.pub beside it) instead of a new one.",
)
@seconds_option(
    "--stop-timeout", default=8, help="Seconds the guest gets to power off when the VM is stopped."
)
@click.option(
    "--warm",
    type=click.Choice([w.value for w in WarmStarts]),
    default=WarmStarts.AUTO.value,
    show_default=True,
    help="auto: restore a saved state of this image and machine; save one (once it answers"
    " SSH) when it was booted before; always: save one after its first boot too;"
    " never: always boot.",
)
@click.option(
    "--exec-transport",
    type=click.Choice([t.value for t in Transport]),
    default=Transport.AUTO.value,
    show_default=True,
    help="How COMMAND reaches the guest: ssh, or serial (virtio-serial and a unit bootc-box"
    " gives the guest; no stdin, no terminal; needs systemd 256 or later in the image);"
    " auto: serial when the image has no sshd.",
)
@click.option(
    "--disk",
    type=click.Path(path_type=Path),
    help="Boot this disk image (raw or qcow2, e.g. from to-disk) under UEFI instead of an image.",
)
@click.option(
    "--transient", is_flag=True, help="With --disk: discard the guest's writes to the disk."
)
@click.option(
    "--format",
    "disk_format",
    type=click.Choice(FORMATS),
    help="With --disk: the disk's format [default: qcow2 for a qcow2 file that names no other"
    " file, else raw; a raw disk's bytes, written by its guest, never make it qcow2].",
)
@click.option(
    "--persistent",
    is_flag=True,
    help="With --name: a VM that keeps its state on its own disk (installed from IMAGE"
    " the first time); this line, or bootc-box start NAME, boots it again.",
)
@click.option(
    "--firmware",
    type=click.Choice(FIRMWARE_CHOICES),
    help="A disk's UEFI firmware (--disk, --persistent): uefi [default], or uefi-secure,"
    " Secure Boot on with Microsoft's keys enrolled (uefi-insecure is bcvk's name for uefi).",
)
@click.option(
    "--tpm/--no-tpm",
    default=None,
    help="Give the guest a software TPM 2.0 (swtpm); a --persistent VM keeps it and what"
    " is sealed to it [default: none, or what the --persistent VM was made with].",
)
@registry_options
@click.argument("image", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(
    *,
    disk: Path | None,
    transient: bool,
    disk_format: str | None,
    persistent: bool,
    firmware: str | None,
    tpm: bool | None,
    detach: bool,
    name: str | None,
    publish: tuple[str, ...],
    allow_host_loopback: bool,
    binds: tuple[str, ...],
    ssh_key: Path | None,
    stop_timeout: int,
    warm: str,
    exec_transport: str,
    machine: MachineOptions,
    pull_policy: str,
    tls_verify: bool | None,
    cert_dir: Path | None,
    authfile: Path | None,
    image: str | None,
    command: tuple[str, ...],
) -> None:
    """Boot IMAGE and run COMMAND in it (or a shell when on a terminal).

    IMAGE is an image name (from the host's shared store, the box's store,
    or pulled from its registry), or oci-archive:PATH, oci:PATH or
    docker-archive:PATH. With --disk FILE, the disk is booted instead and
    no IMAGE is named. The exit status is COMMAND's, or 125 when
    bootc-box itself failed. A COMMAND of one argument is a command line
    for the guest's shell, as with ssh; several arguments are a program
    and its arguments, passed as they are. Put -- before IMAGE too when it
    comes from elsewhere: run [OPTIONS] -- IMAGE -- COMMAND. In the box,
    paths (--bind ., --disk, --ssh-key, archives) are the box's: mount the
    host directory into it first (podman run -v "$PWD:$PWD" -w "$PWD" ...).

    \b
    Examples:
      bootc-box run localhost/my-image -- uname -r
      bootc-box run --bind .:/src:ro --karg quiet localhost/my-image -- make -C /src check
      bootc-box run localhost/my-image -- 'journalctl -b | grep -i error'
      bootc-box run -d --name web -p 8080:80 localhost/my-image
      bootc-box run oci-archive:my-image.tar
      bootc-box run --disk disk.raw -- cat /etc/os-release
      bootc-box run -d --persistent --name web localhost/my-image
      bootc-box run -d --persistent --name sb --firmware uefi-secure --tpm localhost/my-image
    """
    for flag, given in (("--transient", transient), ("--format", disk_format)):
        if given and not disk:
            raise click.UsageError(f"{flag} applies to a disk; add --disk FILE")
    if persistent and disk:
        raise click.UsageError("--persistent takes an IMAGE, not --disk")
    if persistent and not name:
        raise click.UsageError("--persistent needs --name NAME: the VM is booted again by its name")
    target = what_to_boot(disk, image, command)
    if target is None:
        raise click.UsageError("Missing argument 'IMAGE'.")
    image, command = target
    if detach and command:
        raise click.UsageError("a detached VM runs no command; use bootc-box ssh NAME -- CMD")
    machine = dataclasses.replace(
        machine, firmware=parse_firmware(firmware) if firmware else None, tpm=tpm
    )
    spec = RunSpec(
        DiskSource(Disk(disk, disk_format, transient=transient)) if disk else ImageSource(image),
        command=command,
        machine=machine,
        # A detached VM has no terminal, whatever started it.
        tty=sys.stdin.isatty() and sys.stdout.isatty() and not detach,
        pull=PullOptions(PullPolicy(pull_policy), tls_verify, cert_dir, authfile),
        name=name,
        detach=detach,
        publish=tuple(parse_publish(p) for p in publish),
        allow_host_loopback=allow_host_loopback,
        binds=tuple(parse_bind(b) for b in binds),
        ssh_key=ssh_key,
        stop_timeout=float(stop_timeout),
        warm=WarmStarts(warm),
        exec_transport=Transport(exec_transport),
        no_input=stdin_is_null(),
    )
    sys.exit(run_persistent(spec) if persistent else run_vm(spec))


@cli.command()
@click.option(
    "--attach", "-a", is_flag=True, help="Stay in the foreground until the VM stops (one NAME)."
)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_vm_name)
def start(attach: bool, names: tuple[str, ...]) -> None:
    """Boot again VMs that keep their state (made with run --persistent).

    They run detached, as after run -d; with --attach, in the foreground, as
    a box's main command (podman run -d BOX start -a NAME).

    \b
    Examples:
      bootc-box start web
      bootc-box stop web && bootc-box start web
    """
    if attach and len(names) > 1:
        raise click.UsageError("--attach takes one NAME")
    sys.exit(run_start(names, detach=not attach))


@cli.command("to-disk", cls=_PodmanStyle)
@machine_options
@click.option(
    "--format",
    "disk_format",
    type=click.Choice(FORMATS),
    default="raw",
    show_default=True,
    help="raw (sparse) or qcow2, written directly.",
)
@click.option(
    "--disk-size",
    metavar="SIZE",
    help="Size of the disk (20G, 4096M; a number alone is MiB, as for --memory)"
    " [default: the larger of 2x the image and 10G].",
)
@click.option(
    "--filesystem",
    type=click.Choice(FILESYSTEMS),
    default="ext4",
    show_default=True,
    help="Root file system, as bootc install's --filesystem.",
)
@click.option(
    "--root-size",
    metavar="SIZE",
    help="Size of the root partition (a number alone is MiB) [default: the rest].",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@registry_options
@click.argument("image")
@click.argument("output", type=click.Path(path_type=Path))
def to_disk(
    *,
    disk_format: str,
    disk_size: str | None,
    filesystem: str,
    root_size: str | None,
    force: bool,
    machine: MachineOptions,
    pull_policy: str,
    tls_verify: bool | None,
    cert_dir: Path | None,
    authfile: Path | None,
    image: str,
    output: Path,
) -> None:
    """Install IMAGE to a bootable disk image OUTPUT with the image's own bootc.

    IMAGE boots as an installer VM with OUTPUT attached as a disk and runs
    `bootc install to-disk` from itself, as a container. OUTPUT appears
    whole or not at all. --karg goes to the installed system's boot entry.

    \b
    Examples:
      bootc-box to-disk localhost/my-image /out/disk.raw
      bootc-box to-disk --format qcow2 --disk-size 20G localhost/my-image /out/disk.qcow2
      bootc-box run --disk /out/disk.raw -- cat /etc/os-release
    """
    install = InstallSpec(
        image=image,
        format=disk_format,
        disk_size=parse_size(disk_size, "--disk-size") if disk_size else None,
        filesystem=filesystem,
        root_size=checked_size(root_size, "--root-size"),
        # --karg is the installed system's; the installer boots without.
        kargs=machine.kargs,
        pull=PullOptions(PullPolicy(pull_policy), tls_verify, cert_dir, authfile),
        machine=dataclasses.replace(machine, kargs=()),
    )
    spec = ToDiskSpec(install, output, force=force)
    sys.exit(run_to_disk(spec))


class _KeepDashDash(click.Command):
    """Keeps the `--` that ends the options, so that `ssh [OPTIONS] -- CMD`
    (no name) differs from `ssh [OPTIONS] NAME`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = first_operand(args, value_options(self))
        if args[end : end + 1] == ["--"]:
            args = [*args[:end], "--", *args[end:]]
        return super().parse_args(ctx, args)


def name_and_command(args: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """`[NAME] [-- CMD...]` as (NAME or None, CMD)."""
    if args[:1] == ("--",):
        return None, args[1:]
    if not args:
        return None, ()
    rest = args[1:]
    return args[0], rest[1:] if rest[:1] == ("--",) else rest


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the VMs as JSON.")
def list_command(as_json: bool) -> None:
    """List the VMs here: running, stopped, failed or dead, and the stopped
    VMs that keep their state on the cache volume.

    \b
    Example:
      bootc-box list --json | jq -r '.[] | select(.state == "running") | .name'
    """
    sys.exit(run_list(probe_environment(), as_json))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (for tmt, testinfra).")
@click.argument("name", required=False, shell_complete=complete_vm_name)
def inspect(as_json: bool, name: str | None) -> None:
    """Show how to reach VM NAME (the only VM when no NAME): SSH host, port,
    user and key, image, state.

    \b
    Example:
      bootc-box inspect --json web | jq .ssh.port
    """
    sys.exit(run_inspect(probe_environment(), name, as_json))


@cli.command(
    cls=_KeepDashDash,
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
@seconds_option("--timeout", default=600, help="Seconds to wait for a booting VM.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[NAME] [-- COMMAND...]")
def ssh(timeout: int, args: tuple[str, ...]) -> None:
    """Run COMMAND in VM NAME over SSH, or a shell (NAME may be left out when
    there is one VM). Waits for a booting VM; exits with COMMAND's status.
    A COMMAND of one argument is a command line for the guest's shell, as
    with ssh; several arguments are a program and its arguments, passed as
    they are (as run takes COMMAND).

    \b
    Examples:
      bootc-box ssh web
      bootc-box ssh web -- systemctl --failed
      bootc-box ssh web -- 'echo hello > /root/note'
      bootc-box ssh -- cat /etc/os-release    # the only VM
    """
    name, command = name_and_command(args)
    sys.exit(run_ssh(probe_environment(), name, command, float(timeout)))


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the VM runs.")
@click.argument("name", required=False, shell_complete=complete_vm_name)
def logs(follow: bool, name: str | None) -> None:
    """Print VM NAME's boot messages and serial console.

    \b
    Example:
      bootc-box logs -f web
    """
    sys.exit(run_logs(probe_environment(), name, follow))


STOP_TIMEOUT = seconds_option(
    "--time",
    "-t",
    "timeout",
    default=60,
    help="Seconds to wait for the supervisor to power the VM off before killing it.",
)


@cli.command()
@STOP_TIMEOUT
@click.argument("names", nargs=-1, shell_complete=complete_vm_name)
def stop(timeout: int, names: tuple[str, ...]) -> None:
    """Power VMs off (the only VM when no NAME); their state stays until rm.

    \b
    Example:
      bootc-box stop web db
    """
    sys.exit(run_stop(probe_environment(), names, float(timeout)))


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Stop running VMs first.")
@click.option("--all", "-a", "remove_all", is_flag=True, help="Remove every VM here.")
@STOP_TIMEOUT
@click.argument("names", nargs=-1, shell_complete=complete_vm_name)
def rm(force: bool, remove_all: bool, timeout: int, names: tuple[str, ...]) -> None:
    """Remove stopped, failed or dead VMs and their state (keys, logs); for
    a VM that keeps its state, also its disk on the cache volume.

    \b
    Examples:
      bootc-box rm web
      bootc-box rm --force --all
    """
    sys.exit(run_rm(probe_environment(), names, force, remove_all, float(timeout)))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check what this machine or box offers for booting VMs, with fixes.

    \b
    Example:
      podman run --rm --device /dev/kvm -v bootc-box:/cache BOX doctor
    """
    sys.exit(run_doctor(as_json))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON.")
def images(as_json: bool) -> None:
    """List the images bootc-box can boot (a containers.bootc label, or a
    kernel in /usr/lib/modules), from the host's shared store and the box's.

    \b
    Example:
      bootc-box images --json | jq -r '.[].names[]'
    """
    sys.exit(run_images(probe_environment(), as_json))


@cli.command()
@seconds_option("--timeout", default=600, help="Seconds to wait for a booting VM.")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
def cp(timeout: int, source: str, destination: str) -> None:
    """Copy a file or directory into a VM (DST is NAME:PATH) or out of one
    (SRC is NAME:PATH), over its SSH login. An existing directory at DST
    receives SRC under its own name; any other DST is SRC's new name.

    \b
    Examples:
      bootc-box cp ./app.conf web:/etc/app/
      bootc-box cp web:/var/log/journal ./journal
    """
    sys.exit(run_cp(probe_environment(), source, destination, float(timeout)))


@cli.command("ssh-config")
@click.argument("name", required=False, shell_complete=complete_vm_name)
def ssh_config(name: str | None) -> None:
    """Print an ssh_config stanza for VM NAME (every running VM when no NAME),
    so that ssh -F, scp, rsync, Ansible and tmt reach it by name.

    \b
    Examples:
      bootc-box ssh-config web > vm.conf && ssh -F vm.conf web
      rsync -e 'ssh -F vm.conf' -a ./src/ web:/srv/src/
    """
    sys.exit(run_ssh_config(probe_environment(), name))


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      mkdir -p ~/.local/share/bash-completion/completions
      bootc-box completion bash > ~/.local/share/bash-completion/completions/bootc-box
      bootc-box completion zsh > "${fpath[1]}/_bootc-box"
      bootc-box completion fish > ~/.config/fish/completions/bootc-box.fish
    """
    completer = get_completion_class(shell)
    assert completer is not None  # click knows each of SHELLS
    click.echo(completer(cli, {}, PROG, COMPLETE_VARIABLE).source())


@cli.group()
def cache() -> None:
    """What is kept in /cache between runs (see cache-layout.md).

    \b
    Examples:
      bootc-box cache ls
      bootc-box cache prune --all
    """


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print images and saved states as JSON.")
def cache_ls(as_json: bool) -> None:
    """List the images in the box's store and the host's shared store, the
    saved VM states that warm starts restore, and the disks to-disk made.

    \b
    Example:
      bootc-box cache ls --json | jq '.snapshots[].image'
    """
    sys.exit(run_cache_ls(probe_environment(), as_json))


@cache.command("prune")
@click.option(
    "--all",
    "all_images",
    is_flag=True,
    help="Remove every image of the box's store that no container uses.",
)
def cache_prune(all_images: bool) -> None:
    """Remove what crashed runs left, the box store's dangling (untagged)
    images, the boot files and saved states of images that are gone, and
    every cached disk no VM that keeps its state is built on (to-disk
    installs it again). With --all, every image of the box's store that no
    container uses, not only the dangling ones.

    \b
    Example:
      bootc-box cache prune
    """
    sys.exit(run_cache_prune(probe_environment(), all_images))


def usage_error(e: click.ClickException) -> str:
    """click's message on one line, with where the command's usage is."""
    message = " ".join(e.format_message().split()).rstrip(".")  # click's tabs and newlines
    if isinstance(e, click.NoSuchOption):
        if e.option_name == "--debug":
            return "--debug goes before the command: bootc-box --debug COMMAND ..."
        # click words this differently from one version to the next.
        message = f"No such option {e.option_name}"
        if e.possibilities:
            message += f" (did you mean {' or '.join(sorted(e.possibilities))}?)"
    context = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and context is not None:
        return f"{message}; see {context.command_path} --help"
    return message


def main() -> None:
    raise_on_sigterm()
    debug = wants_debug(sys.argv[1:])
    try:
        cli.main(prog_name=PROG, complete_var=COMPLETE_VARIABLE, standalone_mode=False)
    except click.ClickException as e:
        click.echo(f"bootc-box: error: {usage_error(e)}", err=True)
        sys.exit(EXIT_TOOL_FAILED)
    except (KeyboardInterrupt, click.exceptions.Abort):
        # click turns Ctrl-C into Abort; both mean the user stopped us.
        click.echo("bootc-box: interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("bootc-box: terminated", err=True)
        sys.exit(143)
    except Exception as e:  # one line for every failure; the traceback with --debug
        if debug:
            log.exception("failed")
        click.echo(f"bootc-box: error: {as_user_error(e)}", err=True)
        sys.exit(EXIT_TOOL_FAILED)
