"""One real boot of the fixture, from the host, shared by the assertions a
user relies on when running the README's line, `podman run --device /dev/kvm
-v VOLUME:/cache ... bootc-box run IMAGE -- CMD` (no --privileged)."""

import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    BOX,
    FIXTURE,
    HostState,
    box_argv,
    host_state,
    new_cache_volume,
    podman,
    read_until,
)

# Prints what the tests check, then blocks on stdin: the test sees the
# first lines while the command still runs, which is what streaming means.
GUEST_SCRIPT = """
echo "kernel=$(uname -r)"
echo "marker=$(cat /usr/share/bootc-box-fixture-marker)"
touch /etc/bootc-box-e2e && touch /var/bootc-box-e2e && echo "writable=yes"
echo "waiting-for-input"
read -r line
echo "input=$line"
exit 7
"""


@dataclass(frozen=True)
class Boot:
    before_input: str
    after_input: str
    stderr: str
    returncode: int
    host_before: HostState
    host_after: HostState

    def value(self, key: str) -> str:
        for line in self.before_input.splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1].strip()
        raise AssertionError(f"{key}= not in the guest's output: {self.before_input!r}")


@pytest.fixture(scope="module")
def boot() -> Iterator[Boot]:
    host_before = host_state()
    with new_cache_volume() as volume, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            box_argv(
                "run",
                FIXTURE,
                "--",
                "sh",
                "-c",
                GUEST_SCRIPT,
                volume=volume.name,
                options=("--rm", "-i"),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert proc.stdout is not None
        try:
            before = read_until(
                proc.stdout.fileno(), b"waiting-for-input", time.monotonic() + BOOT_DEADLINE
            )
            after, _ = proc.communicate(b"hello-from-the-test\n", timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        yield Boot(
            before.decode(),
            after.decode(),
            stderr.read().decode(),
            proc.returncode,
            host_before,
            host_state(),
        )


def image_kernel_version() -> str:
    modules = subprocess.run(
        ["podman", "run", "--rm", FIXTURE, "ls", "/usr/lib/modules"],
        capture_output=True,
        text=True,
        check=True,
    )
    (kver,) = modules.stdout.split()
    return kver


def test_guest_runs_the_kernel_shipped_in_the_image(boot: Boot) -> None:
    assert boot.value("kernel") == image_kernel_version()


def test_root_file_system_is_the_image(boot: Boot) -> None:
    assert boot.value("marker") == "bootc-box fixture"


def test_etc_and_var_are_writable(boot: Boot) -> None:
    assert boot.value("writable") == "yes"


def test_writes_in_the_guest_leave_the_image_untouched(boot: Boot) -> None:
    check = subprocess.run(
        ["podman", "run", "--rm", FIXTURE, "ls", "/etc/bootc-box-e2e", "/var/bootc-box-e2e"],
        capture_output=True,
        check=False,
    )
    assert check.returncode != 0
    assert b"No such file" in check.stderr


def test_output_is_streamed_while_the_command_runs(boot: Boot) -> None:
    # The first lines arrived while the command was blocked reading stdin,
    # and what the test then wrote reached the command.
    assert "waiting-for-input" in boot.before_input
    assert "input=hello-from-the-test" in boot.after_input


def test_exit_status_of_command_is_returned(boot: Boot) -> None:
    assert boot.returncode == 7, boot.stderr


def test_boot_progress_is_shown(boot: Boot) -> None:
    assert "bootc-box: Booting localhost/bootc-box-fixture:latest" in boot.stderr
    assert "bootc-box: VM up in" in boot.stderr


def test_nothing_is_left_on_the_host(boot: Boot) -> None:
    assert boot.host_after.processes <= boot.host_before.processes
    assert boot.host_after.containers <= boot.host_before.containers
    assert boot.host_after.mounts <= boot.host_before.mounts


def run_with_kvm_required() -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        box_argv("run", "--accel", "kvm", FIXTURE, "--", "true", options=("--rm",)),
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip


def test_kvm_required_refuses_a_kvm_that_cannot_run_the_guest(boot: Boot) -> None:
    """Where `auto` warned and fell back to TCG (this CI's KVM-PVM), `--accel
    kvm` must refuse at once, saying why and what to do."""
    if "falling back to TCG" not in boot.stderr:
        pytest.skip("this host's KVM runs the guest: there is nothing to refuse")
    result = run_with_kvm_required()
    assert result.returncode == 125
    assert "bootc-box: error: KVM cannot run this guest" in result.stderr
    assert "--accel tcg" in result.stderr


def test_kvm_required_boots_where_kvm_works(boot: Boot) -> None:
    if "falling back to TCG" in boot.stderr:
        pytest.skip("this host's KVM cannot run the guest (e.g. KVM-PVM)")
    result = run_with_kvm_required()
    assert result.returncode == 0, result.stderr


def test_box_image_has_a_runlabel_podman_users_can_use() -> None:
    label = podman("image", "inspect", "--format", '{{index .Labels "RUN"}}', BOX)
    assert label.startswith("podman run ")
    assert "--device /dev/kvm" in label
    assert "--privileged" not in label
    assert label.endswith(" IMAGE")
