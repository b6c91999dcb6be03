"""A pytest plugin: the `bootc_vm` fixture boots a bootc image once per test
session and hands the tests a testinfra host, `run()` and the connection.

    pytest --bootc-image quay.io/org/img:tag tests/

By default the VM runs in a bootc-box container (`podman run`), whose
network is the host's so the VM's SSH port is on the host's loopback;
`--bootc-native` runs bootc-box on this host instead."""

import logging
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bootc_box.launchers import (
    DEFAULT_BOX,
    LaunchFailed,
    box_launcher,
    launch,
    native_launcher,
    stop,
)
from bootc_box.ssh import SshTarget, generate_key, ssh_argv

log = logging.getLogger(__name__)


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
    launcher = (
        native_launcher(name)
        if config.getoption("bootc_native")
        else box_launcher(
            name,
            box_image=config.getoption("bootc_box_image"),
            volume=config.getoption("bootc_cache_volume"),
            shared=(key_dir,),
        )
    )
    options = [
        "--memory",
        config.getoption("bootc_memory"),
        "--accel",
        config.getoption("bootc_accel"),
    ]
    try:
        launched = launch(launcher, options, image, key)
    except LaunchFailed as e:
        pytest.fail(str(e), pytrace=False)
    log.info("%s", launched.summary)
    target = launched.ssh
    try:
        host = testinfra.get_host(
            f"ssh://{target.user}@{target.host}:{target.port}",
            ssh_identity_file=str(key),
            # testinfra hands these to a shell.
            ssh_extra_args=" ".join(
                shlex.quote(f"-o{name}={value}") for name, value in target.host_key_options()
            ),
        )
        yield BootcVm(launcher.vm, target, host)
    finally:
        stop(launcher)
