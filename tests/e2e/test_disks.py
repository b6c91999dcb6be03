"""Disk images: to-disk, booting a disk under UEFI, the disk cache.

Real bootc cannot be installed here (Debian has no package), so the
installable fixture ships a STAND-IN at /usr/bin/bootc
(tests/fixtures/installable/bootc-stand-in) that does the part of `bootc
install to-disk` bootc-box relies on: it checks that the source image
resolves in the stores bootc-box shared into the installer VM, partitions
the disk (GPT: ESP + root), installs systemd-boot with a BLS entry and copies
the image. Everything around it is real: the installer VM, the output disk,
the store sharing, the cache, the atomic output, the UEFI boot (OVMF)."""

import errno
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    INSTALLABLE,
    CacheVolume,
    HostState,
    box_argv,
    container_logs,
    host_state,
    in_box,
    new_cache_volume,
    podman,
    wait_for_log,
)

MARKER = "bootc-box installable fixture"


@dataclass(frozen=True)
class Installed:
    disk: Path
    result: "subprocess.CompletedProcess[str]"
    # Made at the same time with the same options: it waited, then copied.
    twin: Path
    twin_result: "subprocess.CompletedProcess[str]"


def box(
    volume: CacheVolume, outdir: Path, *args: str, timeout: float = BOOT_DEADLINE
) -> "subprocess.CompletedProcess[str]":
    """The box with the output directory mounted at the same path."""
    return subprocess.run(
        box_argv(*args, volume=volume.name, options=("--rm", "-v", f"{outdir}:{outdir}")),
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


def cached_disks(volume: CacheVolume) -> list[str]:
    """The whole disk entries on the volume (lock files and partials aside)."""
    directory = volume.path / "disks"
    found = directory.iterdir() if directory.exists() else ()
    return [p.name for p in found if p.is_dir() and not p.name.startswith(".")]


def data_extents(path: Path) -> list[tuple[int, int]]:
    """Where `path` may hold data; the rest are holes, which read as zeros."""
    extents = []
    with path.open("rb") as f:
        size, offset = os.fstat(f.fileno()).st_size, 0
        while offset < size:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError as e:  # ENXIO: no data after offset
                if e.errno == errno.ENXIO:
                    break
                raise
            offset = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            extents.append((start, offset))
    return extents


def same_bytes(a: Path, b: Path) -> bool:
    """`cmp`, byte for byte, but reading only where either file has data: a
    sparse 10 GiB disk read whole takes `cmp` 40 s here, its holes included."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        for start, end in data_extents(a) + data_extents(b):
            for offset in range(start, end, 1 << 20):
                fa.seek(offset)
                fb.seek(offset)
                n = min(end - offset, 1 << 20)
                if fa.read(n) != fb.read(n):
                    return False
    return True


@pytest.fixture(scope="module")
def volume() -> Iterator[CacheVolume]:
    with new_cache_volume() as created:
        yield created


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("disks")


@dataclass(frozen=True)
class Installs:
    """The module's to-disk runs, all started at once on its volume."""

    raw: Installed
    # A qcow2 disk too small for the image, with other options: the install fails.
    small: "subprocess.CompletedProcess[str]"
    small_dir: Path  # where the failed run was to write its disk
    host_before: HostState
    # The whole disk entries on the volume once every run ended.
    disks_after: tuple[str, ...]

    def stderrs(self) -> list[str]:
        results = (self.raw.result, self.raw.twin_result, self.small)
        return [r.stderr for r in results]


@pytest.fixture(scope="module")
def installs(
    volume: CacheVolume, outdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Installs:
    """Every to-disk run of the module that boots an installer, started
    together: two runs of one image with the default options (one installs,
    the other waits for it and copies its disk; the VM that keeps its state,
    below, is made from the same cached disk, with no installer of its own),
    and a qcow2 disk with other options, too small for the image. One whole
    install: under TCG each installs in about 130 s of the host's two cores,
    so a second one (a qcow2 that boots) would cost as much again; the qcow2
    run here goes as far as the installer writing into the qcow2 disk, and
    qcow2 disks boot in every VM that keeps its state (its overlay)."""
    small_dir = tmp_path_factory.mktemp("small")
    host_before = host_state()

    def start(directory: Path, *args: str) -> "subprocess.Popen[str]":
        argv = box_argv("to-disk", *args, volume=volume.name,
                        options=("--rm", "-v", f"{directory}:{directory}"))  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    runs = {
        "a.raw": start(outdir, INSTALLABLE, str(outdir / "a.raw")),
        "b.raw": start(outdir, INSTALLABLE, str(outdir / "b.raw")),
        # A root partition far smaller than the image: the installer runs out
        # of room within its first seconds of copying, as a too small disk would.
        "small": start(small_dir, "--format", "qcow2", "--disk-size", "700M",
                       "--root-size", "24M", "--karg", "bootc_box.to_disk_karg=1", INSTALLABLE,
                       str(small_dir / "small.qcow2")),
    }  # fmt: skip
    results = {}
    for name, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=BOOT_DEADLINE)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    for name in ("a.raw", "b.raw"):
        assert results[name].returncode == 0, results[name].stderr
    raws = {name: results[name] for name in ("a.raw", "b.raw")}
    [(disk, result)] = [(n, r) for n, r in raws.items() if "(installed)" in r.stderr]
    [(twin, twin_result)] = [(n, r) for n, r in raws.items() if n != disk]
    return Installs(
        Installed(outdir / disk, result, outdir / twin, twin_result),
        results["small"],
        small_dir,
        host_before,
        tuple(sorted(cached_disks(volume))),
    )


@pytest.fixture(scope="module")
def raw(installs: Installs) -> Installed:
    return installs.raw


def test_to_disk_installs_with_the_image_bootc_from_the_shared_store(
    raw: Installed, outdir: Path
) -> None:
    out = raw.result.stdout + raw.result.stderr
    # The boot loader the image ships: the signed chain, as for Secure Boot.
    assert "bootc (stand-in): boot loader: shim and systemd-boot, signed for Secure Boot" in out
    # The stand-in found the image in a store bootc-box shared into the VM.
    assert "found in /run/bootc-box/stores/0" in out
    # The VM was given this image alone: no other image, container, volume
    # (the /cache volume itself) or secret of the stores it came from.
    assert "bootc (stand-in): store has 1 image(s) and 0 container(s)" in out
    [holds] = [line for line in out.splitlines() if "store holds:" in line]
    assert not {"libpod", "volumes", "secrets"} & set(holds.split())
    assert "Booting the installer of" in raw.result.stderr
    assert "bootc (stand-in): installed" in out
    assert raw.disk.stat().st_size == 10 << 30  # the default: 2x the image is less than 10G
    assert raw.disk.stat().st_blocks * 512 < 2 << 30  # sparse
    with raw.disk.open("rb") as disk:
        assert disk.read(512)[510:] == b"\x55\xaa"  # a partition table
    # Nothing beside the outputs: the partial files were renamed into place.
    assert sorted(p.name for p in outdir.iterdir()) == ["a.raw", "b.raw"]


def test_the_disk_boots_under_uefi_and_keeps_what_the_guest_writes(
    raw: Installed, volume: CacheVolume, outdir: Path
) -> None:
    first = box(volume, outdir, "run", "--disk", str(raw.disk), "--karg", "bootc_box.run_karg=1",
                "--", "sh", "-c", "cat /usr/share/bootc-box-installable-marker; "
                "cat /proc/cmdline; findmnt -no FSTYPE /; echo kept > /root/kept")  # fmt: skip
    assert first.returncode == 0, first.stderr
    marker, cmdline, fstype = first.stdout.splitlines()[:3]
    assert marker == MARKER
    args = cmdline.split()
    # The image's kargs.d is in the boot entry; run's --karg comes through
    # systemd-boot, after it.
    assert "bootc_box.kargs_d=1" in args
    assert "bootc_box.other_arch=1" not in args
    assert args[-3:] == [
        "console=ttyS0",
        "systemd.journald.forward_to_console=1",
        "bootc_box.run_karg=1",
    ]
    assert any(a.startswith("root=UUID=") for a in args)
    assert fstype == "ext4"
    assert re.search(r"Booting disk \S+ \(UEFI, (KVM|TCG)\)", first.stderr)
    before = raw.disk.stat()
    second = box(volume, outdir, "run", "--disk", str(raw.disk), "--transient", "--",
                 "sh", "-c", "cat /root/kept; echo gone > /root/gone")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout == "kept\n"
    # --transient: the guest's writes went to a throwaway overlay.
    after = raw.disk.stat()
    assert (after.st_mtime_ns, after.st_blocks) == (before.st_mtime_ns, before.st_blocks)
    assert volume.leftovers() == []


ESP_START = 1 << 20  # bytes: the partition begins at 1 MiB, sector 2048
ESP_DISK_SIZE = 64 << 20


def unsigned_loader_disk(path: Path) -> Path:
    """A disk whose ESP holds systemd-boot as Debian builds it, with no
    signature, as the removable-media loader: what a disk made from an
    image that ships no signed chain boots first. An MBR with one EFI
    System partition, a FAT file system (dosfstools) and the file copied in
    (mtools), all on the host: no install for one refusal."""
    loader = path.with_name("systemd-bootx64.efi")
    loader.write_bytes(subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "cat", INSTALLABLE,
         "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"],
        check=True, capture_output=True,
    ).stdout)  # fmt: skip
    sectors = (ESP_DISK_SIZE - ESP_START) // 512
    entry = bytes([0, 0, 0, 0, 0xEF, 0, 0, 0])
    entry += (ESP_START // 512).to_bytes(4, "little") + sectors.to_bytes(4, "little")
    with path.open("wb") as disk:
        disk.truncate(ESP_DISK_SIZE)
        disk.seek(446)
        disk.write(entry + bytes(48) + b"\x55\xaa")
    image = f"{path}@@{ESP_START}"
    for argv in (
        ["mkfs.vfat", "--offset", str(ESP_START // 512), str(path), str(sectors // 2)],
        ["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"],
        ["mcopy", "-i", image, str(loader), "::/EFI/BOOT/BOOTX64.EFI"],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    loader.unlink()
    return path


def test_secure_boot_refuses_an_unsigned_boot_loader_at_once_and_cleanly(
    volume: CacheVolume, tmp_path: Path
) -> None:
    """Microsoft's keys do not let an unsigned systemd-boot start."""
    disk = unsigned_loader_disk(tmp_path / "unsigned.raw")
    before = host_state()
    refused = box(volume, tmp_path, "run", "--disk", str(disk), "--transient",
                  "--firmware", "uefi-secure", "--", "true")  # fmt: skip
    assert refused.returncode == 125, refused.stderr
    [error] = [line for line in refused.stderr.splitlines() if line.startswith("bootc-box: error:")]
    assert error.startswith(
        "bootc-box: error: Secure Boot refused the disk's boot loader: it has no signature the"
        " firmware trusts (console: 'BdsDxe: failed to load Boot"
    )
    assert error.endswith("; boot the disk with --firmware uefi, or install a boot loader signed"
                          " for Secure Boot (the shim distributions ship, signed by Microsoft's"
                          " UEFI CA)")  # fmt: skip
    # Nothing ran that a power button could stop: no wait for one.
    assert "Powering the VM off" not in refused.stderr
    assert volume.leftovers() == []
    assert host_state().processes <= before.processes


def test_runs_of_one_key_share_one_install(
    raw: Installed, volume: CacheVolume, outdir: Path
) -> None:
    result = raw.twin_result
    assert "Another run is installing this image with these options" in result.stderr
    assert "Booting" not in result.stderr  # no installer VM
    assert "(copied from the cache)" in result.stderr.splitlines()[-1]
    listing = json.loads(box(volume, outdir, "cache", "ls", "--json", timeout=120).stdout)
    # One disk of these options, and no other (the qcow2 install failed).
    [disk] = listing["disks"]
    assert disk["options"]["kargs"] == []
    assert (disk["options"]["format"], disk["options"]["filesystem"]) == ("raw", "ext4")
    assert disk["options"]["size"] == 10 << 30
    assert disk["options"]["source"] == INSTALLABLE
    table = box(volume, outdir, "cache", "ls", timeout=120).stdout.splitlines()
    disk_rows = table[table.index(next(t for t in table if t.startswith("DISK"))) :]
    assert disk_rows[0].split()[:6] == ["DISK", "IMAGE", "ID", "FORMAT", "SIZE", "FILESYSTEM"]
    assert [row.split()[2:6] for row in disk_rows[1:]] == [["raw", "10.0", "GiB", "ext4"]]
    # The copy is the installed disk, byte for byte (the boots above wrote
    # to the installer's output, so compare with the cache's own file).
    cached = volume.path / "disks" / disk["key"] / "disk.raw"
    assert same_bytes(cached, raw.twin)
    raw.twin.unlink()


@pytest.fixture
def v2() -> Iterator[str]:
    """The installable fixture's next version, built on the host as a user
    builds theirs: one file more."""
    image = "localhost/bootc-box-installable-v2:latest"
    subprocess.run(
        ["podman", "build", "-q", "-t", image, "-f", "-"],
        input=f"FROM {INSTALLABLE}\nRUN echo v2 > /usr/share/bootc-box-v2\n",
        text=True, check=True, capture_output=True,
    )  # fmt: skip
    yield image
    subprocess.run(["podman", "rmi", image], check=False, capture_output=True)


def rolls_back_across_a_reboot(box_name: str, ssh: Callable[[str], str]) -> None:
    """v2 runs, with /var as v1 left it (--bind-storage-ro came back with
    the VM); after `bootc rollback` and a reboot from the guest, v1 again."""
    assert ssh("cat /var/persist /usr/share/bootc-box-v2; bootc rollback >/dev/null") == ("one\nv2")
    boot_id = ssh("cat /proc/sys/kernel/random/boot_id")
    assert podman("exec", box_name, "sh", "-c", "bootc-box ssh keep -- systemctl reboot;"
                  " echo rebooting") == "rebooting"  # fmt: skip
    # ssh waits across the reboot.
    after = ssh("cat /proc/sys/kernel/random/boot_id; bootc status; echo two >> /var/persist;"
                " ls /usr/share/bootc-box-v2 2>&1 || true").splitlines()  # fmt: skip
    assert after[0] != boot_id
    assert after[1:] == [
        "booted: root-a; next: root-a",
        "ls: cannot access '/usr/share/bootc-box-v2': No such file or directory",
    ]
    assert "The guest is rebooting" in container_logs(box_name)


# systemd-creds seals with the TPM's storage key, made from the TPM's seed:
# a TPM with other state cannot open it.
SEAL = "echo -n s3cret | systemd-creds encrypt --with-key=tpm2 --name=db - /var/db.cred"
UNSEAL = "systemd-creds decrypt --name=db /var/db.cred -"
# The EFI variable: 4 bytes of attributes, then 1 when Secure Boot is on.
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT = "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-" + EFI_GLOBAL


def secure_boot_and_a_tpm_are_there(box_name: str, ssh: Callable[[str], str]) -> None:
    """Secure Boot on, --karg through the signed systemd-boot, the TPM, a
    secret sealed to it, and inspect saying so."""
    booted = ssh(f"{SECURE_BOOT}; ls /dev/tpm0; {SEAL}; cat /proc/cmdline").splitlines()
    assert booted[0].split() == ["6", "0", "0", "0", "1"]
    assert booted[1] == "/dev/tpm0"
    assert "bootc_box.sb_karg=1" in booted[2].split()
    assert ssh(UNSEAL) == "s3cret"
    info = json.loads(in_box(box_name, "inspect", "--json", "keep").stdout)
    assert (info["firmware"], info["tpm"]) == ("uefi-secure", True)


def test_a_vm_keeps_its_state_across_podman_stop_start_and_bootc_box_stop_start(
    raw: Installed, volume: CacheVolume, v2: str
) -> None:
    """`run --persistent` in a `podman run -d` box, under Secure Boot with a
    TPM: podman stop and start of the box power the VM off and boot it again
    with what it wrote and what it sealed to its TPM; bootc-box stop powers
    it off too, and start, from another box, boots it again (once), the
    secret still there; rm deletes its disk. On the way, an upgrade as bootc
    users test one: with --bind-storage-ro, `bootc switch` to v2 built on
    the host (the stand-in's A/B deployments), boot it, `bootc rollback`,
    reboot from the guest, and v1 runs again."""
    name = f"bootc-box-test-keep-{time.monotonic_ns()}"
    vm_dir = volume.path / "vms" / "keep"
    subprocess.run(
        box_argv("run", "--persistent", "--name", "keep", "--bind-storage-ro",
                 "--firmware", "uefi-secure", "--tpm", "--karg", "bootc_box.sb_karg=1", INSTALLABLE,
                 volume=volume.name, options=("-d", "--name", name)),
        check=True, capture_output=True,
    )  # fmt: skip

    def ssh(script: str) -> str:
        result = in_box(name, "ssh", "keep", "--", script)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    try:
        wait_for_log(name, "VM up in", time.monotonic() + BOOT_DEADLINE)
        logs = container_logs(name)
        assert "Made VM keep, which keeps its state" in logs
        assert "installer" not in logs  # built on the cached disk of `raw`
        secure_boot_and_a_tpm_are_there(name, ssh)
        assert ssh("echo one > /var/persist; echo written") == "written"
        switched = ssh(f"bootc switch --transport containers-storage {v2} && bootc status")
        assert switched.splitlines()[-1] == "booted: root-a; next: root-b"
        assert subprocess.run(["podman", "stop", name], check=False,
                              capture_output=True).returncode == 0  # fmt: skip
        assert "The VM powered off" in container_logs(name)
        assert (vm_dir / "disk.qcow2").is_file()
        listed = subprocess.run(
            box_argv("list", volume=volume.name, options=("--rm",)),
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert [line.split()[:3] for line in listed[1:]] == [["keep", "stopped", INSTALLABLE]]
        assert stat.S_IMODE((vm_dir / "tpm").stat().st_mode) == 0o700
        podman("start", name)
        wait_for_log(name, "VM up in", time.monotonic() + BOOT_DEADLINE, times=2)
        assert ssh(UNSEAL) == "s3cret"
        rolls_back_across_a_reboot(name, ssh)
        # bootc-box stop ends the box's main command: the box exits, and
        # podman kills the exec session with it (137) unless it ended first.
        stop = subprocess.run(["podman", "exec", name, "bootc-box", "stop", "keep"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert stop.returncode in (0, 137), stop.stderr
        assert podman("wait", name) == "143"  # stopped by SIGTERM, as by podman stop
        assert "The VM powered off" in container_logs(name).rsplit("VM up in", 1)[1]
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "0", name], check=False,
                       capture_output=True)  # fmt: skip
    desk = f"{name}-desk"
    desk_argv = box_argv("sleep", "infinity", volume=volume.name, options=("-d", "--name", desk))
    subprocess.run(desk_argv, check=True, capture_output=True)
    try:
        # start returns once QEMU runs; ssh waits for the guest to answer.
        podman("exec", desk, "bootc-box", "start", "keep")
        twice = subprocess.run(["podman", "exec", desk, "bootc-box", "start", "keep"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert twice.returncode == 125
        assert "VM keep is already running" in twice.stderr
        assert podman("exec", desk, "bootc-box", "ssh", "keep", "--", UNSEAL) == "s3cret"
        assert podman("exec", desk, "bootc-box", "rm", "--force", "keep") == "keep"
        assert not vm_dir.exists()
    finally:
        # Also after a failure, so that the tests after this one find no VM.
        subprocess.run(["podman", "exec", desk, "bootc-box", "rm", "--force", "keep"],
                       check=False, capture_output=True)  # fmt: skip
        subprocess.run(["podman", "rm", "--force", "--time", "0", desk], check=False,
                       capture_output=True)  # fmt: skip
    assert volume.nested_containers() == []


def test_cache_prune_removes_the_disks_no_run_and_no_vm_uses(
    raw: Installed, volume: CacheVolume, outdir: Path
) -> None:
    """After the VM that kept its state was removed, above."""
    pruned = box(volume, outdir, "cache", "prune", timeout=120)
    assert pruned.returncode == 0, pruned.stderr
    assert " 1 cached disks and 0 half-made VMs" in pruned.stderr
    assert cached_disks(volume) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["to-disk", FIXTURE, "{out}/x.raw"],
         f"bootc-box: error: {FIXTURE} has no /usr/bin/bootc: to-disk installs an image "
         "with its own bootc; build the image on a bootc base image"),
        (["to-disk", INSTALLABLE, "{out}/exists.raw"],
         "bootc-box: error: {out}/exists.raw already exists; remove it, or pass --force"),
        (["to-disk", INSTALLABLE, "/nowhere/x.raw"],
         "bootc-box: error: cannot write /nowhere/x.raw: /nowhere is not a directory; "
         "create it, or mount a host directory there"),
        (["run", "--disk", "{out}/exists.raw", "--", "true"],
         "bootc-box: error: {out}/exists.raw is not a disk image (neither qcow2 nor a "
         "partitioned raw disk)"),
        (["run", "--disk", "/nowhere/x.raw", "--", "true"],
         "bootc-box: error: disk image /nowhere/x.raw does not exist; mount it into the box, "
         "e.g. -v /nowhere:/nowhere"),
        (["to-disk", "--disk-size", "100M", INSTALLABLE, "{out}/x.raw"],
         "bootc-box: error: --disk-size 100M is smaller than the image"),
    ],
    ids=["no-bootc", "output-exists", "no-directory", "not-a-disk", "missing-disk", "tiny-disk"],
)  # fmt: skip
def test_bad_disk_input_is_refused_cleanly(
    args: list[str], message: str, cache_volume: CacheVolume, tmp_path: Path
) -> None:
    (tmp_path / "exists.raw").write_text("not a disk\n")
    before = host_state()
    result = box(cache_volume, tmp_path, *(a.format(out=tmp_path) for a in args), timeout=300)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(message.format(out=tmp_path)), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.raw"]
    assert cache_volume.nested_containers() == []
    assert cache_volume.leftovers() == []
    assert host_state().processes <= before.processes


def test_a_disk_too_small_fails_with_the_installer_lines_and_leaves_nothing(
    installs: Installs, volume: CacheVolume
) -> None:
    """Run beside the other installs of the image on the module's volume:
    every installer is given the one store of the image made for them all,
    not a copy each, and the failed install leaves no disk, partial or
    container."""
    result = installs.small
    assert result.returncode == 125
    said = result.stdout + result.stderr
    # to-disk's options reached bootc in the installer, writing into a qcow2 disk.
    assert f"Installing {INSTALLABLE} (qcow2, 0.7 GiB) with its own bootc" in said
    assert (
        "install to-disk --filesystem ext4 --root-size 24M --karg: bootc_box.to_disk_karg=1" in said
    )
    assert "No space left on device" in said
    assert result.stderr.splitlines()[-1].startswith(
        "bootc-box: error: bootc install to-disk failed in the installer VM (status "
    )
    assert "Booting the installer of" in result.stderr
    assert sum(e.count("into a store of its own") for e in installs.stderrs()) == 1
    assert list(installs.small_dir.iterdir()) == []
    # The raw disk: the failed install added no entry.
    assert len(installs.disks_after) == 1
    assert volume.nested_containers() == []
    assert volume.leftovers() == []
    assert host_state().processes <= installs.host_before.processes
