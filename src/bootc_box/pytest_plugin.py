"""A pytest plugin: the `bootc_vm` fixture boots a bootc image once per test
session and hands the tests a testinfra host, `run()` and the connection.

    pytest --bootc-image quay.io/org/img:tag tests/

By default the VM runs in a bootc-box container (`podman run`), whose
network is the host's so the VM's SSH port is on the host's loopback;
`--bootc-native` runs bootc-box on this host instead."""

import json
import logging
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootc_box.ssh import SshTarget, generate_key, ssh_argv

log = logging.getLogger(__name__)

DEFAULT_BOX = "localhost/bootc-box:latest"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bootc-box", "booting bootc images for tests")
    group.addoption("--bootc-image", help="The bootc image the bootc_vm fixture boots.")
    group.addoption("--bootc-memory", default="2G", help="Guest memory (default 2G).")
    group.addoption(
        "--bootc-accel", default="auto", choices=("auto", "kvm", "tcg"), help="Accelerator."
    )
    group.addoption(
        "--bootc-box-image", default=DEFAULT_BOX, help=f"The box image (default {DEFAULT_BOX})."
    )
    group.addoption(
        "--bootc-cache-volume",
        default="bootc-box",
        help="podman volume for the box's /cache (default bootc-box).",
    )
    group.addoption(
        "--bootc-native", action="store_true", help="Run bootc-box on this host, not in podman."
    )


@dataclass(frozen=True)
class BootcVm:
    """A booted VM: `host` is a testinfra Host; `ssh` says how to reach it."""

    name: str
    ssh: SshTarget
    host: Any  # testinfra.host.Host

    def run(self, command: str, timeout: float = 300) -> "subprocess.CompletedProcess[str]":
        """Run a shell command in the guest; its status, stdout and stderr."""
        return subprocess.run(
            ssh_argv(self.ssh, ["sh", "-c", command]),
            capture_output=True, text=True, check=False, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def boot_id(self) -> str | None:
        """The guest's boot ID, which each boot draws anew; None while it does not answer."""
        try:
            result = self.run("cat /proc/sys/kernel/random/boot_id", timeout=30)
        except subprocess.TimeoutExpired:
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    def reboot(self, command: str = "systemctl reboot", timeout: float = 900) -> None:
        """Reboot the guest with `command` (or one that reboots it, as
        `bootc upgrade --apply` does) and wait until it answers from its
        next boot: bootc-box boots it again in the same VM."""
        before = self.boot_id()
        assert before, f"VM {self.name} does not answer before its reboot"
        deadline = time.monotonic() + timeout
        try:
            done = self.run(command, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{command!r} did not end within {timeout:.0f} s") from None
        # 255: ssh's connection ended with the guest's sshd, as it may.
        if done.returncode not in (0, 255):
            raise AssertionError(
                f"{command!r} failed with status {done.returncode}: {done.stderr.strip()}"
            )
        while (now := self.boot_id()) in (None, before):
            if time.monotonic() > deadline:
                raise AssertionError(f"VM {self.name} did not come back within {timeout:.0f} s")
            time.sleep(1)  # one SSH attempt a second, while the guest boots
        log.info("VM %s rebooted: boot %s", self.name, now)


@dataclass(frozen=True)
class Launcher:
    """How to start bootc-box, and how to reach it once started."""

    start: list[str]  # runs `bootc-box run -d ...`, or a box whose command is `run`
    command: list[str]  # prefix that runs `bootc-box` next to the VM
    logs: list[str]  # what bootc-box and the console said, kept until `stop`
    stop: list[str]


def box_launcher(config: pytest.Config, key_dir: Path, name: str) -> Launcher:
    graph_root = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphRoot}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    start = [
        # No --rm: a box whose VM failed to boot keeps its logs for the report.
        "podman", "run", "-d", "--name", name,
        # The VM's forwarded SSH port lands on the host's loopback.
        "--network", "host",
        "--device", "/dev/kvm",
        "-v", f"{config.getoption('bootc_cache_volume')}:/cache",
        "-v", f"{graph_root}:/var/lib/containers/host-storage:ro",
        "-v", f"{key_dir}:{key_dir}:ro",
        config.getoption("bootc_box_image"),
        "run", "--name", "vm",
    ]  # fmt: skip
    return Launcher(
        start,
        ["podman", "exec", name, "bootc-box"],
        ["podman", "logs", name],
        ["podman", "rm", "--force", "--time", "30", name],
    )


def native_launcher(name: str) -> Launcher:
    binary = shutil.which("bootc-box") or "bootc-box"
    return Launcher(
        [binary, "run", "-d", "--name", name],
        [binary],
        [binary, "logs", name],
        [binary, "rm", "-f", name],
    )


@pytest.fixture(scope="session")
def bootc_vm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootcVm]:
    config = request.config
    image = config.getoption("bootc_image")
    if not image:
        pytest.fail("the bootc_vm fixture needs --bootc-image IMAGE")
    # Imported here: pytest loads this plugin wherever bootc-box is installed,
    # and testinfra is only there with the [pytest] extra.
    import testinfra  # noqa: PLC0415

    key_dir = tmp_path_factory.mktemp("bootc-box-key")
    key = generate_key(key_dir)
    name = f"bootc-box-pytest-{secrets.token_hex(4)}"
    native = config.getoption("bootc_native")
    launcher = native_launcher(name) if native else box_launcher(config, key_dir, name)
    vm_name = name if native else "vm"
    options = [
        "--memory", config.getoption("bootc_memory"),
        "--accel", config.getoption("bootc_accel"),
        "--ssh-key", str(key),
    ]  # fmt: skip
    steps = (
        [*launcher.start, *options, image],
        # `ssh` waits for the boot; inspect then says where SSH listens.
        [*launcher.command, "ssh", vm_name, "--", "true"],
        [*launcher.command, "inspect", "--json", vm_name],
    )
    try:
        for argv in steps:
            inspect = subprocess.run(argv, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as e:
        said = subprocess.run(launcher.logs, capture_output=True, text=True, check=False)
        lines = (said.stdout + said.stderr + e.stderr).splitlines()
        subprocess.run(launcher.stop, check=False, capture_output=True)
        last = "\n".join(lines[-30:])
        pytest.fail(f"bootc-box could not boot {image}; what it said last:\n{last}", pytrace=False)
    try:
        info = json.loads(inspect.stdout)["ssh"]
        target = SshTarget(
            info["host"], info["port"], info["user"], key, info.get("host_key") or None
        )
        host = testinfra.get_host(
            f"ssh://{target.user}@{target.host}:{target.port}",
            ssh_identity_file=str(key),
            # testinfra hands these to a shell.
            ssh_extra_args=" ".join(
                shlex.quote(f"-o{name}={value}") for name, value in target.host_key_options()
            ),
        )
        yield BootcVm(vm_name, target, host)
    finally:
        subprocess.run(launcher.stop, check=False, stdout=subprocess.DEVNULL)
