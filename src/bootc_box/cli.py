"""The command line: click only; each command hands a spec to its run_* function."""

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from bootc_box import __version__
from bootc_box.accel import AccelChoice
from bootc_box.cache import run_cache_ls, run_cache_prune
from bootc_box.doctor import run_doctor
from bootc_box.environment import probe_environment
from bootc_box.errors import EXIT_TOOL_FAILED, BootcBoxError
from bootc_box.images import PullOptions, PullPolicy, run_pull
from bootc_box.qemu import parse_memory
from bootc_box.run import RunSpec, run_run

log = logging.getLogger("bootc_box")
F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """SIGTERM (e.g. `podman stop`), raised so every resource unwinds in order."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second signal must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "bootc-box: " + ("warning: " if record.levelno == logging.WARNING else "")
        return prefix + super().format(record)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show debug messages and tracebacks.")
@click.version_option(__version__, prog_name="bootc-box")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Boot bootc container images as virtual machines."""
    ctx.obj = debug
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def registry_options(command: F) -> F:
    """How to reach a registry: shared by `run` and `pull`."""
    for option in reversed(
        [
            click.option(
                "--tls-verify",
                type=click.BOOL,
                is_flag=False,
                flag_value=True,
                default=True,
                show_default=True,
                help="Verify the registry's TLS certificate; --tls-verify=false skips it.",
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
        ]
    ):
        command = option(command)
    return command


@cli.command()
@registry_options
@click.argument("image")
def pull(*, tls_verify: bool, cert_dir: Path | None, authfile: Path | None, image: str) -> None:
    """Pull IMAGE from a registry into the box's store (the /cache volume)."""
    sys.exit(run_pull(image, PullOptions(PullPolicy.ALWAYS, tls_verify, cert_dir, authfile)))


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--memory", "-m", default="2G", show_default=True, help="Guest memory (4G, 512M).")
@click.option("--cpus", default=2, show_default=True, type=click.IntRange(1), help="Guest CPUs.")
@click.option("--karg", "kargs", multiple=True, help="Extra kernel argument (repeatable).")
@click.option(
    "--accel",
    type=click.Choice([a.value for a in AccelChoice]),
    default="auto",
    show_default=True,
    help="auto: KVM when it can run the guest, else TCG with a warning.",
)
@click.option("--console", is_flag=True, help="Show the guest's serial console on stderr.")
@click.option(
    "--timeout",
    default=600,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds to wait for the guest to answer SSH.",
)
@click.option(
    "--pull",
    "pull_policy",
    type=click.Choice([p.value for p in PullPolicy]),
    default="missing",
    show_default=True,
    help="When to pull IMAGE from its registry, as podman run --pull.",
)
@registry_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(
    *,
    memory: str,
    cpus: int,
    kargs: tuple[str, ...],
    accel: str,
    console: bool,
    timeout: int,
    pull_policy: str,
    tls_verify: bool,
    cert_dir: Path | None,
    authfile: Path | None,
    image: str,
    command: tuple[str, ...],
) -> None:
    """Boot IMAGE and run COMMAND in it (or a shell when on a terminal).

    IMAGE is an image name (from the host's shared store, the box's store,
    or pulled from its registry), or oci-archive:PATH, oci:PATH or
    docker-archive:PATH. The exit status is COMMAND's, or 125 when
    bootc-box itself failed.
    """
    if command[:1] == ("--",):
        command = command[1:]
    spec = RunSpec(
        image=image,
        command=command,
        memory_mib=parse_memory(memory),
        cpus=cpus,
        kargs=kargs,
        accel=AccelChoice(accel),
        console=console,
        timeout=float(timeout),
        tty=sys.stdin.isatty() and sys.stdout.isatty(),
        pull=PullOptions(PullPolicy(pull_policy), tls_verify, cert_dir, authfile),
    )
    sys.exit(run_run(spec))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check what this machine or box offers for booting VMs, with fixes."""
    sys.exit(run_doctor(as_json))


@cli.group()
def cache() -> None:
    """What is kept in /cache between runs (see cache-layout.md)."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON.")
def cache_ls(as_json: bool) -> None:
    """List the images in the box's store and the host's shared store."""
    sys.exit(run_cache_ls(as_json))


@cache.command("prune")
@click.option("--all", "all_images", is_flag=True, help="Remove every image of ours not in use.")
def cache_prune(all_images: bool) -> None:
    """Remove what crashed runs left and images nothing uses."""
    sys.exit(run_cache_prune(probe_environment(), all_images))


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except BootcBoxError as e:
        if debug:
            log.exception("failed")
        click.echo(f"bootc-box: error: {e}", err=True)
        sys.exit(EXIT_TOOL_FAILED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_TOOL_FAILED)
    except (KeyboardInterrupt, click.exceptions.Abort):
        # click turns Ctrl-C into Abort; both mean the user stopped us.
        click.echo("bootc-box: interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("bootc-box: terminated", err=True)
        sys.exit(143)
