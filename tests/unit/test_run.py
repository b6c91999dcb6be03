import base64
import os
import subprocess
from pathlib import Path

from bootc_box.accel import Accel
from bootc_box.binds import parse_bind, squashed_to
from bootc_box.environment import zero_is_host_root
from bootc_box.images import PullOptions
from bootc_box.kernel import BootFiles
from bootc_box.qemu import Disk, Firmware
from bootc_box.run import (
    Prepared,
    RunSpec,
    file_servers,
    run_keys,
    vm_spec,
    what_to_boot,
    with_absolute_paths,
)
from bootc_box.ssh import generate_key


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
    key = generate_key(tmp_path)
    firmware = Firmware(Path("/fw/CODE.fd"), tmp_path / "efivars.fd")
    _, credentials, host_key = run_keys(RunSpec(image="x", ssh_key=key), tmp_path,
                                        forget_old_keys=True)  # fmt: skip
    prepared = Prepared(key, credentials, host_key, "qemu", Accel.TCG, firmware=firmware)
    disk = Disk(Path("/d/disk.qcow2"), "qcow2", serial="root")
    spec = RunSpec(image="/d/disk.qcow2", disk=disk, kargs=("quiet",),
                   binds=(parse_bind("/src:/src:ro"),))  # fmt: skip
    machine = vm_spec(spec, prepared, tmp_path, 2222)
    assert (machine.kernel, machine.initramfs, machine.virtiofs_socket) == (None, None, None)
    assert machine.firmware == firmware
    assert machine.disks == (disk,)
    assert machine.credential_files == credentials
    assert machine.cmdline == (
        "console=ttyS0 systemd.mount-extra=bind0:/src:virtiofs:ro,nosuid,nodev quiet"
    )
    # The key ssh-keygen wrote beside the private one, as it wrote it.
    authorized, tmpfiles = (credential_value(c) for c in credentials)
    assert authorized == (tmp_path / "id_ed25519.pub").read_bytes()
    assert authorized.startswith(b"ssh-ed25519 ")
    # One tmpfiles.extra (a credential is given once): systemd-tmpfiles
    # removes before it creates, so the credential's key wins; then the host key.
    forget, private, public = tmpfiles.splitlines()
    assert forget == b"r /root/.ssh/authorized_keys"
    assert private.startswith(b"f+~ /etc/ssh/ssh_host_ed25519_key 0600 root root - ")
    assert public == b"f+~ /etc/ssh/ssh_host_ed25519_key.pub 0644 root root - " + (
        base64.b64encode(f"{host_key}\n".encode())
    )
    # The private half is the host key's: ssh-keygen derives the same public key.
    host_private = tmp_path / "host_key"
    host_private.write_bytes(base64.b64decode(private.split()[-1]))
    host_private.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", host_private],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert derived.split()[:2] == host_key.split()[:2]


def credential_value(path: Path) -> bytes:
    return base64.b64decode(path.read_text().partition("=")[2])


def test_an_image_boot_gets_its_host_key_but_keeps_its_authorized_keys(tmp_path: Path) -> None:
    key = generate_key(tmp_path)
    _, credentials, host_key = run_keys(RunSpec(image="x", ssh_key=key), tmp_path)
    tmpfiles = credential_value(credentials[1])
    assert tmpfiles.startswith(b"f+~ /etc/ssh/ssh_host_ed25519_key 0600 root root - ")
    assert b"authorized_keys" not in tmpfiles
    private, public = (base64.b64decode(line.split()[-1]) for line in tmpfiles.splitlines())
    assert public.decode().startswith(host_key)
    assert b"PRIVATE KEY" in private
    # Credential files are the host's secrets too.
    assert all(c.stat().st_mode & 0o777 == 0o600 for c in credentials)


def test_an_image_run_serves_its_root_and_each_bind_a_disk_boot_only_its_binds(
    tmp_path: Path,
) -> None:
    key, credentials, host_key = tmp_path / "k", (tmp_path / "c",), "ssh-ed25519 AAAA"
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    binds = (parse_bind(f"{src}:/src:ro"), parse_bind(f"{out}:/out"))
    image = Prepared(key, credentials, host_key, "qemu", Accel.TCG, root=Path("/mnt/root"),
                     boot=BootFiles("6.12", Path("/b/vmlinuz"), Path("/b/initrd")))  # fmt: skip
    spec = RunSpec(image="img", binds=binds)
    servers = file_servers(spec, image, vm_spec(spec, image, tmp_path, 2222), tmp_path)
    host_root = zero_is_host_root(Path("/proc/self/uid_map").read_text())
    me = (squashed_to(os.getuid(), host_root), squashed_to(os.getgid(), host_root))
    assert [(s.spec.shared_dir, s.spec.socket.name, s.spec.readonly, s.spec.host_edits,
             s.spec.owner, s.log_file.name) for s in servers] == [
        (Path("/mnt/root"), "rootfs.sock", True, False, None, "virtiofsd.log"),
        (src, "bind0.sock", True, True, None, "virtiofsd-bind0.log"),
        (out, "bind1.sock", False, True, me, "virtiofsd-bind1.log"),
    ]  # fmt: skip
    disk = Prepared(key, credentials, host_key, "qemu", Accel.TCG,
                    firmware=Firmware(Path("/c"), Path("/v")))  # fmt: skip
    spec = RunSpec(image="/d.raw", disk=Disk(Path("/d.raw")), binds=binds)
    servers = file_servers(spec, disk, vm_spec(spec, disk, tmp_path, 2222), tmp_path)
    assert [s.spec.shared_dir for s in servers] == [src, out]
