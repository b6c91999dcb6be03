"""The command line: click only; each command hands a spec to its run_* function."""

import logging
import signal
import sys
from types import FrameType

import click

from bootc_box import __version__
from bootc_box.accel import AccelChoice
from bootc_box.errors import EXIT_TOOL_FAILED, BootcBoxError
from bootc_box.qemu import parse_memory
from bootc_box.run import RunSpec, run_run

log = logging.getLogger("bootc_box")


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
    image: str,
    command: tuple[str, ...],
) -> None:
    """Boot IMAGE and run COMMAND in it (or a shell when on a terminal).

    IMAGE is a name in podman's storage, or oci-archive:PATH, oci:PATH,
    docker-archive:PATH. The exit status is COMMAND's, or 125 when bootc-box
    itself failed.
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
    )
    sys.exit(run_run(spec))


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
