"""How a test framework starts a VM it tests in (the pytest plugin, the tmt
plugin): `bootc-box run -d` on this host, or a box whose command is `run`,
and how it then reaches and removes the VM. Both plugins take their VM the
same way, from here."""

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootc_box.ssh import SshTarget

DEFAULT_BOX = "localhost/bootc-box:latest"
DEFAULT_VOLUME = "bootc-box"
# The box's one VM: a box holds nothing else, so its name needs no care.
BOX_VM = "vm"


@dataclass(frozen=True)
class Launcher:
    """How to start bootc-box, and how to reach it once started."""

    start: list[str]  # runs `bootc-box run -d ...`, or a box whose command is `run`
    command: list[str]  # prefix that runs `bootc-box` next to the VM
    logs: list[str]  # what bootc-box and the console said, kept until `stop`
    stop: tuple[list[str], ...]  # each run in turn, whatever the one before did
    vm: str  # the VM's name, where `command` runs


class LaunchFailed(Exception):
    """The VM did not boot; the message ends with what bootc-box said last."""


def graph_root() -> str:
    """podman's image store on this host, shared read-only into a box."""
    return subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphRoot}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def box_launcher(
    name: str,
    *,
    box_image: str = DEFAULT_BOX,
    volume: str = DEFAULT_VOLUME,
    shared: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    kept: bool = False,
    store: str | None = None,
) -> Launcher:
    """A box called `name` whose command is `run --name VM ...`, on the
    host's network so the VM's SSH port is on the host's loopback; `shared`
    directories are mounted read-only at their own paths (the key's, the
    inputs'), `writable` ones read-write.
    A kept VM (`--persistent`) lives on the volume, which other boxes share:
    it is named as the box is, and removed once the box is gone (`rm` in
    the box would end with the box's VM, which is its main process).
    `store`: the host's image store (default: podman's)."""
    vm = name if kept else BOX_VM
    start = [
        # No --rm: a box whose VM failed to boot keeps its logs for the report.
        "podman", "run", "-d", "--name", name,
        "--network", "host",
        "--device", "/dev/kvm",
        "-v", f"{volume}:/cache",
        "-v", f"{store or graph_root()}:/var/lib/containers/host-storage:ro",
        *(arg for path in shared for arg in ("-v", f"{path}:{path}:ro")),
        *(arg for path in writable for arg in ("-v", f"{path}:{path}")),
        box_image,
        "run", "--name", vm,
    ]  # fmt: skip
    remove_box = ["podman", "rm", "--force", "--time", "30", name]
    remove_vm = ["podman", "run", "--rm", "-v", f"{volume}:/cache", box_image, "rm", "--force", vm]
    return Launcher(
        start,
        ["podman", "exec", name, "bootc-box"],
        ["podman", "logs", name],
        (remove_box, *([remove_vm] if kept else [])),
        vm,
    )


def native_launcher(name: str) -> Launcher:
    binary = shutil.which("bootc-box") or "bootc-box"
    return Launcher(
        [binary, "run", "-d", "--name", name],
        [binary],
        [binary, "logs", name],
        ([binary, "rm", "--force", name],),
        name,
    )


@dataclass(frozen=True)
class Launched:
    ssh: SshTarget
    # bootc-box's summary: `VM up in 3 s, restored (...)`.
    summary: str


def up_line(said: str) -> str:
    """The last summary line in what bootc-box said (progress.summary)."""
    lines = [line for line in said.splitlines() if "VM up in " in line]
    return "VM up in " + lines[-1].split("VM up in ", 1)[1] if lines else ""


def launch(launcher: Launcher, options: Sequence[str], image: str | None, key: Path) -> Launched:
    """Start the VM with `options`, wait until it answers SSH with `key`,
    and say where; on failure the VM is removed and LaunchFailed says why.
    No image with --disk in `options`."""
    steps = (
        [*launcher.start, *options, "--ssh-key", str(key), *([image] if image else [])],
        # `ssh` waits for the boot; inspect then says where SSH listens.
        [*launcher.command, "ssh", launcher.vm, "--", "true"],
        [*launcher.command, "inspect", "--json", launcher.vm],
    )
    try:
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
        info = json.loads(done.stdout)["ssh"]
        target = SshTarget(
            info["host"], int(info["port"]), info["user"], key, info.get("host_key") or None
        )
    except (subprocess.CalledProcessError, ValueError, KeyError, TypeError) as e:
        said = subprocess.run(launcher.logs, capture_output=True, text=True, check=False)
        # No logs of a box that never started: podman's own error says why.
        logs = said.stdout + said.stderr if said.returncode == 0 else ""
        own = e.stderr if isinstance(e, subprocess.CalledProcessError) else str(e)
        lines = (logs + own).splitlines()
        stop(launcher)
        last = "\n".join(lines[-30:])
        raise LaunchFailed(
            f"bootc-box could not boot {image or 'the disk'}; what it said last:\n{last}"
        ) from None
    except BaseException:
        # Ctrl-C (tmt, pytest) while the VM boots: it goes too.
        stop(launcher)
        raise
    said = subprocess.run(launcher.logs, capture_output=True, text=True, check=False)
    return Launched(target, up_line(said.stdout + said.stderr))


def stop(launcher: Launcher) -> None:
    run_stop(launcher.stop)


def run_stop(commands: Sequence[Sequence[str]]) -> None:
    for argv in commands:
        subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
