"""What testing a bootc image with bootc-box looks like: boot it once for the
session, then assert on the running guest with testinfra.

    pip install 'bootc-box[pytest]'
    pytest --bootc-image localhost/bootc-box-fixture:latest examples/

(The assertions here fit bootc-box's own test image; write yours for yours.)"""

from bootc_box.pytest_plugin import BootcVm


def test_the_image_is_debian_trixie(bootc_vm: BootcVm) -> None:
    assert bootc_vm.host.file("/etc/os-release").contains("trixie")


def test_sshd_is_enabled_and_running(bootc_vm: BootcVm) -> None:
    sshd = bootc_vm.host.service("ssh")
    assert sshd.is_enabled
    assert sshd.is_running


def test_a_command_runs_with_its_status_and_output(bootc_vm: BootcVm) -> None:
    result = bootc_vm.run("cat /usr/share/bootc-box-fixture-marker; exit 3")
    assert (result.returncode, result.stdout) == (3, "bootc-box fixture\n")


def test_the_guest_comes_back_from_a_reboot_with_a_fresh_etc(bootc_vm: BootcVm) -> None:
    assert bootc_vm.run("touch /etc/before-reboot").returncode == 0
    bootc_vm.reboot()  # waits until the guest answers from its next boot
    assert not bootc_vm.host.file("/etc/before-reboot").exists
