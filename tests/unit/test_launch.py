import base64
import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from bootc_box.assembly import Prepared, file_servers, vm_spec
from bootc_box.binds import parse_bind, squashed_to
from bootc_box.boot import Disk, Firmware, FirmwareBoot, KernelBoot
from bootc_box.credentials import Login, new_login
from bootc_box.environment import Environment, zero_is_host_root
from bootc_box.images import PullOptions
from bootc_box.launch import may_warm, runs_over_serial
from bootc_box.machine_options import MachineOptions
from bootc_box.qemu import Accel, qemu_argv
from bootc_box.run_spec import DiskSource, ImageSource, RunSpec, Transport, what_to_boot
from bootc_box.snapshots import Manifest, Snapshot
from bootc_box.ssh import generate_key, public_key
from bootc_box.warm import Start


def test_every_path_a_user_gives_is_made_absolute_before_a_supervisor_runs_in_slash() -> None:
    spec = RunSpec(
        ImageSource("oci:layout:tag"),
        ssh_key=Path("keys/k"),
        pull=PullOptions(cert_dir=Path("certs"), authfile=Path("/etc/auth.json")),
        binds=(parse_bind(".:/mnt/here"), parse_bind("/srv:/mnt/srv:ro")),
    )
    done = spec.absolute(Path("/home/u/work"))
    assert done.source == ImageSource("oci:/home/u/work/layout:tag")
    assert done.ssh_key == Path("/home/u/work/keys/k")
    assert done.pull.cert_dir == Path("/home/u/work/certs")
    assert done.pull.authfile == Path("/etc/auth.json")
    assert [str(b) for b in done.binds] == ["/home/u/work:/mnt/here:rw", "/srv:/mnt/srv:ro"]
    plain = RunSpec(ImageSource("quay.io/x/y:1")).absolute(Path("/w"))
    assert plain.source == ImageSource("quay.io/x/y:1")
    assert plain.ssh_key is None
    disk = RunSpec(DiskSource(Disk(Path("d.raw"), None))).absolute(Path("/w"))
    assert disk.source == DiskSource(Disk(Path("/w/d.raw"), None))
    assert disk.title == "disk /w/d.raw"


def test_with_a_disk_what_was_taken_for_image_begins_the_command() -> None:
    disk = Path("/d/disk.raw")
    assert what_to_boot(disk, "uname", ("-r",)) == ("/d/disk.raw", ("uname", "-r"))
    assert what_to_boot(disk, None, ()) == ("/d/disk.raw", ())
    assert what_to_boot(None, "img", ("--", "uname")) == ("img", ("uname",))
    assert what_to_boot(None, None, ()) is None


def credential_value(path: Path) -> bytes:
    return base64.b64decode(path.read_text().partition("=")[2])


def test_a_disk_boot_is_a_uefi_machine_whose_guest_forgets_earlier_keys(tmp_path: Path) -> None:
    key = generate_key(tmp_path)
    login = new_login(tmp_path, key, forget_old_keys=True)
    firmware = Firmware(Path("/fw/CODE.fd"), tmp_path / "efivars.fd")
    disk = Disk(Path("/d/disk.qcow2"), "qcow2", serial="root")
    boot = FirmwareBoot(firmware, disk, ("quiet",))
    spec = RunSpec(DiskSource(disk), machine=MachineOptions(kargs=("quiet",)))
    machine = vm_spec(spec, Prepared(login, "qemu", Accel.TCG, boot), tmp_path, 2222)
    assert machine.boot == boot
    assert machine.drives == (disk,)
    assert machine.credential_files == login.credentials
    argv = qemu_argv(machine, "qemu")
    assert "-kernel" not in argv
    assert (
        "type=11,value=io.systemd.boot.kernel-cmdline-extra="
        "console=ttyS0 systemd.journald.forward_to_console=1 "
        "quiet" in argv
    )
    # The key ssh-keygen wrote beside the private one, as it wrote it.
    authorized, tmpfiles = (credential_value(c) for c in login.credentials)
    assert authorized == (tmp_path / "id_ed25519.pub").read_bytes()
    assert authorized.startswith(b"ssh-ed25519 ")
    # One tmpfiles.extra (a credential is given once): systemd-tmpfiles
    # removes before it creates, so the credential's key wins; then the host key.
    forget, private, public = tmpfiles.splitlines()
    assert forget == b"r /root/.ssh/authorized_keys"
    assert private.startswith(b"f+~ /etc/ssh/ssh_host_ed25519_key 0600 root root - ")
    assert public == b"f+~ /etc/ssh/ssh_host_ed25519_key.pub 0644 root root - " + (
        base64.b64encode(f"{login.host_key}\n".encode())
    )
    # The private half is the host key's: ssh-keygen derives the same public key.
    host_private = tmp_path / "host_key"
    host_private.write_bytes(base64.b64decode(private.split()[-1]))
    host_private.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", host_private],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert derived.split()[:2] == login.host_key.split()[:2]


def test_an_image_boot_gets_its_host_key_but_keeps_its_authorized_keys(tmp_path: Path) -> None:
    key = generate_key(tmp_path)
    login = new_login(tmp_path, key)
    assert login.key == key
    tmpfiles = credential_value(login.credentials[1])
    assert tmpfiles.startswith(b"f+~ /etc/ssh/ssh_host_ed25519_key 0600 root root - ")
    assert b"authorized_keys" not in tmpfiles
    private, public = (base64.b64decode(line.split()[-1]) for line in tmpfiles.splitlines())
    assert public.decode().startswith(login.host_key)
    assert b"PRIVATE KEY" in private
    # Credential files are the host's secrets too.
    assert all(c.stat().st_mode & 0o777 == 0o600 for c in login.credentials)


def test_a_login_without_a_key_makes_one_of_its_own(tmp_path: Path) -> None:
    login = new_login(tmp_path)
    assert login.key == tmp_path / "id_ed25519"
    assert login.key.stat().st_mode & 0o777 == 0o600
    assert credential_value(login.credentials[0]) == public_key(login.key)


def test_each_attempt_serves_the_root_in_its_own_directory(tmp_path: Path) -> None:
    login = Login(tmp_path / "k", (tmp_path / "c",), "ssh-ed25519 AAAA")
    boot = KernelBoot(Path("/b/vmlinuz"), Path("/b/initrd"), Path("rootfs.sock"), ("quiet",))
    prepared = Prepared(login, "qemu", Accel.TCG, boot, root=Path("/mnt/root"))
    spec = RunSpec(ImageSource("img"))
    one = vm_spec(spec, prepared, tmp_path / "boot-1", 2222)
    two = vm_spec(spec, prepared, tmp_path / "boot-2", 2223)
    assert isinstance(one.boot, KernelBoot)
    assert isinstance(two.boot, KernelBoot)
    assert one.boot.root_socket == tmp_path / "boot-1/rootfs.sock"
    assert two.boot.root_socket == tmp_path / "boot-2/rootfs.sock"
    assert boot.root_socket == Path("rootfs.sock")


def test_an_image_run_serves_its_root_and_each_bind_a_disk_boot_only_its_binds(
    tmp_path: Path,
) -> None:
    login = Login(tmp_path / "k", (tmp_path / "c",), "ssh-ed25519 AAAA")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    binds = (parse_bind(f"{src}:/src:ro"), parse_bind(f"{out}:/out"))
    boot = KernelBoot(Path("/b/vmlinuz"), Path("/b/initrd"), Path("rootfs.sock"))
    image = Prepared(login, "qemu", Accel.TCG, boot, root=Path("/mnt/root"))
    spec = RunSpec(ImageSource("img"), binds=binds)
    servers = file_servers(spec, image, vm_spec(spec, image, tmp_path, 2222), tmp_path)
    host_root = zero_is_host_root(Path("/proc/self/uid_map").read_text())
    me = (squashed_to(os.getuid(), host_root), squashed_to(os.getgid(), host_root))
    assert [(s.spec.shared_dir, s.spec.socket, s.spec.readonly, s.spec.host_edits,
             s.spec.owner, s.log_file.name) for s in servers] == [
        (Path("/mnt/root"), tmp_path / "rootfs.sock", True, False, None, "virtiofsd.log"),
        (src, tmp_path / "bind0.sock", True, True, None, "virtiofsd-bind0.log"),
        (out, tmp_path / "bind1.sock", False, True, me, "virtiofsd-bind1.log"),
    ]  # fmt: skip
    firmware_boot = FirmwareBoot(Firmware(Path("/c"), Path("/v")), Disk(Path("/d.raw")))
    disk = Prepared(login, "qemu", Accel.TCG, firmware_boot)
    spec = RunSpec(DiskSource(Disk(Path("/d.raw"))), binds=binds)
    servers = file_servers(spec, disk, vm_spec(spec, disk, tmp_path, 2222), tmp_path)
    assert [s.spec.shared_dir for s in servers] == [src, out]


@pytest.mark.parametrize(
    "case",
    [
        (Transport.SSH, True, True, True, True, True),
        (Transport.SSH, True, True, True, False, False),  # podman run -i: its input goes over SSH
        (Transport.SSH, True, True, False, True, False),  # saved before its unit said it waits
        (Transport.SSH, True, False, False, True, False),  # a cold boot logs in
        (Transport.SSH, False, True, True, True, False),  # a run of --warm never's machine
        (Transport.SERIAL, False, False, False, False, True),  # no sshd: always
    ],
)
def test_the_command_goes_over_serial_from_a_state_saved_with_the_unit_waiting(
    tmp_path: Path, case: tuple[Transport, bool, bool, bool, bool, bool]
) -> None:
    """case: the transport, whether the machine has the agent, whether the
    run restores, whether the unit was saved waiting, whether stdin is
    /dev/null, and whether the command goes over serial."""
    transport, agent, restored, saved_waiting, no_input, serial = case
    entry = tmp_path / "entry"
    entry.mkdir()
    manifest = Manifest("k", "id", "img", 2048, 2, "", {}, 0, "", agent=saved_waiting)
    (entry / "manifest.json").write_text(json.dumps(dataclasses.asdict(manifest)))
    login = new_login(tmp_path)
    boot = KernelBoot(Path("/k/vmlinuz"), Path("/k/initramfs.img"), Path("r.sock"), ())
    prepared = Prepared(login, "qemu", Accel.TCG, boot, transport=transport, agent=agent)
    start = Start(login, restore=Snapshot(entry) if restored else None)
    spec = RunSpec(ImageSource("img"), command=("true",), no_input=no_input)
    assert runs_over_serial(spec, prepared, start) is serial


def test_a_run_with_a_tpm_never_uses_saved_states() -> None:
    """Restored from one state, every run would have the same TPM seeds."""
    kept = Environment(in_box=True, cache_kept=True)
    image = RunSpec(ImageSource("localhost/img"))
    assert may_warm(image, kept)
    assert not may_warm(dataclasses.replace(image, machine=MachineOptions(tpm=True)), kept)
    assert may_warm(dataclasses.replace(image, machine=MachineOptions(tpm=False)), kept)
