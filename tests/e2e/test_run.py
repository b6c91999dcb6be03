"""One real boot of the fixture, from the host, shared by the assertions a
user relies on when running the README's line, `podman run --device /dev/kvm
-v VOLUME:/cache ... bootc-box run IMAGE -- CMD` (no --privileged)."""

import subprocess

import pytest

from tests.e2e.conftest import BOOT_DEADLINE, BOX, FIXTURE, Boot, box_argv, podman


@pytest.fixture(scope="module")
def boot(first_boot: Boot) -> Boot:
    """The session's cold boot (conftest.py), which later runs restore."""
    return first_boot


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
