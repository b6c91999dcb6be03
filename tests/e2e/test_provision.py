"""Provisioning and reboots: what a guest is given at boot besides its login
(credentials, units, extra disks, swap, a cloud-init seed: provision.py), and a VM that stays
up through its guest's reboots, as one booted cold and one restored from
the session's saved state. Both VMs run at once in one long-lived box, so
that their boots and reboots share the host's two cores."""

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CLOUD_INIT,
    FIXTURE,
    CacheVolume,
    assert_refused_cleanly,
    box_argv,
    in_box,
    long_lived_box,
)

UNIT = """\
[Unit]
Description=bootc-box test unit, enabled by its [Install] section

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> /var/tmp/unit-ran'

[Install]
WantedBy=multi-user.target
"""
LINKED = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
# Run in the guest: what it was given, one fact a line.
FACTS = """
systemd-creds --system cat app.greeting; echo
systemd-creds --system cat app.file
systemctl is-active hello.service linked.service
cat /var/tmp/unit-ran
readlink /dev/disk/by-id/virtio-data
cat /sys/block/$(basename $(readlink /dev/disk/by-id/virtio-data))/size
swapon --show=NAME,SIZE --noheadings
cat /sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw; echo
echo "$STORAGE_OPTS"
test -f /run/host-container-storage/overlay-images/images.json && echo store
cat /proc/sys/kernel/random/boot_id
"""
IGNITION = '{"ignition": {"version": "3.4.0"}}'
USER_DATA = """#cloud-config
write_files:
  - path: /etc/from-cloud-init
    content: written by cloud-init
runcmd:
  - [sh, -c, "cat /proc/sys/kernel/random/boot_id > /run/runcmd-ran"]
"""


@dataclass(frozen=True)
class Box:
    container: str
    files: Path

    def bootc_box(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return in_box(self.container, *args)

    def ssh(self, vm: str, script: str) -> str:
        result = self.bootc_box("ssh", vm, "--", script)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def reboot(self, vm: str) -> None:
        # The connection may end with the guest's sshd (255) or first (0).
        result = self.bootc_box("ssh", vm, "--", "systemctl reboot")
        assert result.returncode in (0, 255), result.stderr


@pytest.fixture(scope="module")
def box(warm_volume: CacheVolume, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    files = tmp_path_factory.mktemp("provision")
    system = files / "units/system"
    (system / "multi-user.target.wants").mkdir(parents=True)
    (system / "hello.service").write_text(UNIT)
    (system / "linked.service").write_text(LINKED)
    (system / "multi-user.target.wants/linked.service").symlink_to("../linked.service")
    (files / "secret").write_bytes(b"from a file\n")
    (files / "secret").chmod(0o600)
    (files / "config.ign").write_text(IGNITION)
    (files / "seed").mkdir()
    (files / "seed/user-data").write_text(USER_DATA)
    (files / "seed/meta-data").write_text("instance-id: bootc-box-test\nlocal-hostname: seeded\n")
    with (files / "data.raw").open("wb") as disk:
        disk.truncate(64 << 20)
    with long_lived_box(warm_volume, "provision", ("-v", f"{files}:{files}")) as name:
        yield Box(name, files)


def test_a_provisioned_vm_and_a_restored_one_come_back_from_their_reboots(box: Box) -> None:
    files = box.files
    provisioned = box.bootc_box(
        "run", "-d", "--name", "p",
        "--set-credential", r"app.greeting:hello\nworld",
        "--load-credential", f"app.file:{files}/secret",
        "--systemd-units", f"{files}/units",
        "--mount-disk-file", f"{files}/data.raw",
        "--add-swap", "128M",
        "--ignition", f"{files}/config.ign",
        "--bind-storage-ro",
        # Cold anyway (its disks): the TPM costs no restore here.
        "--tpm",
        FIXTURE,
    )  # fmt: skip
    assert provisioned.returncode == 0, provisioned.stderr
    # The session's saved state is of this machine: restored, not booted.
    restored = box.bootc_box("run", "-d", "--name", "w", FIXTURE)
    assert restored.returncode == 0, restored.stderr

    facts = box.ssh("p", FACTS).splitlines()
    assert facts[:4] == ["hello", "world", "from a file", "active"]
    assert facts[4] == "active"  # enabled by its multi-user.target.wants/ link
    boot_id = facts[-1]
    assert facts[5] == boot_id  # the unit ran at boot
    assert facts[6].startswith("../../vd")
    assert facts[7] == str((64 << 20) // 512)
    swap, size = facts[8].split()
    assert swap.startswith("/dev/vd")
    assert swap != facts[6].replace("../..", "/dev")
    assert size == "128M"
    assert facts[9] == IGNITION  # as the guest's fw_cfg driver reads it
    # The host's image store, for podman in the guest's logins.
    assert facts[10:12] == ["additionalimagestore=/run/host-container-storage", "store"]
    # --tpm on an image: a TPM 2.0 on the CRB interface, with the kernel booted directly.
    tpm = box.ssh("p", "cat /sys/class/tpm/tpm0/tpm_version_major; ls /dev/tpmrm0")
    assert tpm.split() == ["2", "/dev/tpmrm0"]
    inspected = json.loads(box.bootc_box("inspect", "--json", "p").stdout)
    assert (inspected["firmware"], inspected["tpm"]) == (None, True)
    w_boot = box.ssh("w", "cat /proc/sys/kernel/random/boot_id; touch /etc/written")
    logs = box.bootc_box("logs", "w").stdout
    assert "Restoring" in logs
    assert "booting cold" not in logs

    box.ssh("p", "touch /etc/written")
    box.reboot("p")
    box.reboot("w")
    # ssh waits across the reboot: the VM is `booting` until it answers.
    after = box.ssh("p", FACTS + "ls /etc/written 2>&1 || true").splitlines()
    assert after[-2] != boot_id
    assert after[5] == after[-2]  # /var/tmp is fresh: the unit ran once, in this boot
    assert after[:5] == facts[:5]
    assert after[8].split()[1] == "128M"
    assert "No such file" in after[-1]  # /etc starts fresh, as after a cold boot
    # The restored VM boots for real, with the saved state's login, and is
    # given the run's key and host key again: the same ssh gets in.
    w_after = box.ssh("w", "cat /proc/sys/kernel/random/boot_id; ls /etc/written 2>&1 || true")
    assert w_after.splitlines()[0] != w_boot.splitlines()[0]
    assert "No such file" in w_after
    listed = box.bootc_box("list").stdout
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["p", "running"], ["w", "running"]
    ]  # fmt: skip
    assert "VM w is running again" in box.bootc_box("logs", "w").stdout
    for vm in ("p", "w"):
        assert box.bootc_box("rm", "--force", vm).returncode == 0


def test_cloud_init_finds_the_seed_and_runs_it(box: Box) -> None:
    """Debian's cloud-init in the guest (the cloud-init fixture) finds the
    NoCloud seed by its label, with no network, and runs all its stages; the
    host key bootc-box pinned survives its ssh module (the login works)."""
    script = (
        "cloud-init status --wait --long; echo status=$?; cat /etc/from-cloud-init; echo; "
        "cat /run/runcmd-ran /proc/sys/kernel/random/boot_id; "
        "cloud-init query instance_id; hostname; blockdev --getro /dev/disk/by-id/virtio-cidata"
    )
    result = box.bootc_box("run", "--cloud-init", f"{box.files}/seed", CLOUD_INIT, "--", script)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "status: done" in out
    assert "detail: DataSourceNoCloud [seed=/dev/vda]" in out
    assert "errors: []" in out
    assert "status=0" in out  # not degraded: no root partition to grow on an image
    rest = out[out.index("status=0") + 1 :]
    assert rest[0] == "written by cloud-init"
    assert rest[1] == rest[2]  # runcmd ran in this boot
    assert rest[3:5] == ["bootc-box-test", "seeded"]  # the given meta-data
    assert rest[5] == "1"  # the seed is read-only for the guest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-credential", "app.token"],
         "bootc-box: error: --set-credential 'app.token' has no value; "
         "write it as --set-credential ID:VALUE"),
        (["--load-credential", "app.key:/nowhere/key"],
         "bootc-box: error: --load-credential app.key: cannot read /nowhere/key"),
        (["--systemd-units", "/etc/hostname"],
         "bootc-box: error: --systemd-units /etc/hostname: no such directory"),
        (["--systemd-units", "{files}/units"],
         "bootc-box: error: {files}/units/hello.service is not a unit file: line 1 is neither "
         "[Section] nor KEY=VALUE"),
        (["--mount-disk-file", "{files}/d.raw:a", "--mount-disk-file", "{files}/d.raw:b"],
         "bootc-box: error: --mount-disk-file: {files}/d.raw is already attached"),
        (["--add-swap", "lots"], "bootc-box: error: invalid --add-swap 'lots'"),
        (["--ignition", "{files}/units/hello.service"],
         "bootc-box: error: --ignition: {files}/units/hello.service is not an Ignition config"),
        (["--cloud-init", "{files}/units"],
         "bootc-box: error: --cloud-init: {files}/units has hello.service, which is not a NoCloud "
         "file; keep only user-data, meta-data, network-config, vendor-data in it"),
        (["--cloud-init", "{files}/units/hello.service"],
         "bootc-box: error: --cloud-init: {files}/units/hello.service: user-data is not in a "
         "format cloud-init runs; start it with #cloud-config"),
    ],
    ids=["id-without-value", "missing-file", "units-not-a-directory", "not-a-unit",
         "disk-twice", "swap-size", "not-ignition", "not-a-seed", "not-user-data"],
)  # fmt: skip
def test_bad_provisioning_is_refused_cleanly(
    args: list[str], message: str, cache_volume: CacheVolume, tmp_path: Path
) -> None:
    (tmp_path / "units").mkdir()
    (tmp_path / "units/hello.service").write_text("echo hello\n")  # a script, not a unit
    (tmp_path / "d.raw").write_bytes(b"")
    args = [arg.format(files=tmp_path) for arg in args]
    argv = box_argv("run", *args, FIXTURE, "--", "true", volume=cache_volume.name,
                    options=("--rm", "-v", f"{tmp_path}:{tmp_path}"))  # fmt: skip
    assert_refused_cleanly(argv, message.format(files=tmp_path), cache_volume)
