from pathlib import Path

from bootc_box.accel import Accel
from bootc_box.binds import parse_bind
from bootc_box.credentials import smbios_credential, write_credential
from bootc_box.images import PullOptions
from bootc_box.qemu import Disk, Firmware
from bootc_box.run import (
    FORGET_OLD_KEYS,
    Prepared,
    RunSpec,
    StallWatch,
    vm_spec,
    what_to_boot,
    with_absolute_paths,
)

# What the fixture's 6.12 kernel printed when a TCG vCPU stopped getting ticks.
STALL = b"""[   26.081384] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   26.082622] rcu: \t1-...!: (0 ticks this GP) idle=bc00/0/0x0 softirq=13/13 fqs=0
"""


def test_a_stall_counts_once_the_console_stays_quiet_or_it_is_reported_again(
    tmp_path: Path,
) -> None:
    console = tmp_path / "console.log"
    watch = StallWatch(console, quiet=20)
    assert not watch.stalled(0)  # QEMU has not created it yet
    console.write_bytes(b"[    5.58] virtiofs virtio1: virtio_fs_setup_dax: No cache capability\n")
    assert not watch.stalled(1)
    console.write_bytes(STALL)
    assert not watch.stalled(2)  # reported just now
    assert not watch.stalled(21)
    assert watch.stalled(22)  # and nothing since for 20 s


def test_a_stall_that_passes_does_not_count(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    watch = StallWatch(console, quiet=20)
    console.write_bytes(STALL)
    assert not watch.stalled(0)
    with console.open("ab") as more:
        more.write(b"[   31.2] systemd[1]: Reached target multi-user.target\n")
    assert not watch.stalled(15)  # the boot went on
    assert not watch.stalled(34)
    with console.open("ab") as more:
        more.write(STALL)  # the same stall, reported again
    assert watch.stalled(36)


def test_every_path_a_user_gives_is_made_absolute_before_a_supervisor_runs_in_slash() -> None:
    spec = RunSpec(
        image="oci:layout:tag",
        ssh_key=Path("keys/k"),
        pull=PullOptions(cert_dir=Path("certs"), authfile=Path("/etc/auth.json")),
        binds=(parse_bind(".:/mnt/here"), parse_bind("/srv:/mnt/srv:ro")),
    )
    done = with_absolute_paths(spec, Path("/home/u/work"))
    assert done.image == "oci:/home/u/work/layout:tag"
    assert done.ssh_key == Path("/home/u/work/keys/k")
    assert done.pull.cert_dir == Path("/home/u/work/certs")
    assert done.pull.authfile == Path("/etc/auth.json")
    assert [str(b) for b in done.binds] == ["/home/u/work:/mnt/here:rw", "/srv:/mnt/srv:ro"]
    plain = with_absolute_paths(RunSpec(image="quay.io/x/y:1"), Path("/w"))
    assert plain.image == "quay.io/x/y:1"
    assert plain.ssh_key is None


def test_with_a_disk_what_was_taken_for_image_begins_the_command() -> None:
    disk = Path("/d/disk.raw")
    assert what_to_boot(disk, "uname", ("-r",)) == ("/d/disk.raw", ("uname", "-r"))
    assert what_to_boot(disk, None, ()) == ("/d/disk.raw", ())
    assert what_to_boot(None, "img", ("--", "uname")) == ("img", ("uname",))
    assert what_to_boot(None, None, ()) is None


def test_a_disk_boot_is_a_uefi_machine_that_rewrites_root_keys(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    credential = write_credential(tmp_path, "ssh.authorized_keys.root", b"ssh-ed25519 AAAA x\n")
    forget = write_credential(tmp_path, "tmpfiles.extra", FORGET_OLD_KEYS)
    firmware = Firmware(Path("/fw/CODE.fd"), tmp_path / "efivars.fd")
    prepared = Prepared(key, credential, "qemu", Accel.TCG, firmware=firmware,
                        extra_credentials=(forget,))  # fmt: skip
    disk = Disk(Path("/d/disk.qcow2"), "qcow2", serial="root")
    spec = RunSpec(image="/d/disk.qcow2", disk=disk, kargs=("quiet",),
                   binds=(parse_bind("/src:/src:ro"),))  # fmt: skip
    machine = vm_spec(spec, prepared, tmp_path, 2222)
    assert (machine.kernel, machine.initramfs, machine.virtiofs_socket) == (None, None, None)
    assert machine.firmware == firmware
    assert machine.disks == (disk,)
    assert machine.credential_files == (credential, forget)
    assert machine.cmdline == ("console=ttyS0 systemd.mount-extra=bind0:/src:virtiofs:ro quiet")
    # systemd-tmpfiles removes before it creates: the credential's key wins.
    assert forget.read_text() == smbios_credential("tmpfiles.extra", FORGET_OLD_KEYS)
    assert FORGET_OLD_KEYS == b"r /root/.ssh/authorized_keys\n"
