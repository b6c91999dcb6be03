"""One VM per box container, podman-native, as a CI pipeline would use it:
`podman run -d` keeps the VM up; `podman exec ... bootc-box ssh` reaches
it; `podman logs` shows the boot; --publish and --bind connect it to the
host; tmt provisions it from what `inspect --json` prints; `podman stop`
powers it off. One boot serves every test here."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_box.network import free_port
from tests.e2e.conftest import (
    FIXTURE,
    CacheVolume,
    box_argv,
    container_logs,
    guest_reads_tcp,
    host_address,
    host_state,
    in_box,
    new_cache_volume,
    podman,
    serve_secret,
)

MARKER = "bootc-box fixture"
# The owner of the writable --bind directory: a user, not root.
USER = 1000


@dataclass(frozen=True)
class BoxVm:
    container: str
    cache: CacheVolume
    key: Path
    published_port: int  # as -p PORT:22, so on 127.0.0.1 only
    open_port: int  # as -p 0.0.0.0:PORT:22
    ro_dir: Path
    rw_dir: Path

    def exec(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return in_box(self.container, *args)


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoxVm]:
    base = tmp_path_factory.mktemp("vm-box")
    ro_dir, rw_dir, key_dir = base / "ro", base / "rw", base / "key"
    for directory in (ro_dir, rw_dir, key_dir):
        directory.mkdir()
    (ro_dir / "hello").write_text("from the host\n")
    # A user's directory, as a --bind of a developer's checkout would be.
    os.chown(rw_dir, USER, USER)
    key = key_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    port, open_port = free_port(), free_port()
    container = f"bootc-box-test-vm-{time.monotonic_ns()}"
    with new_cache_volume() as cache:
        options = (
            "-d", "--name", container,
            # The VM's forwarded ports then listen on the host's loopback.
            "--network", "host",
            "-v", f"{key_dir}:{key_dir}:ro",
            "-v", f"{ro_dir}:{ro_dir}:ro",
            "-v", f"{rw_dir}:{rw_dir}",
        )  # fmt: skip
        argv = box_argv(
            "run", "--ssh-key", str(key), "--publish", f"{port}:22",
            "--publish", f"0.0.0.0:{open_port}:22",
            "--bind", f"{ro_dir}:/mnt/ro:ro", "--bind", f"{rw_dir}:/mnt/rw",
            "--stop-timeout", "60", FIXTURE,
            volume=cache.name, options=options,
        )  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
        try:
            yield BoxVm(container, cache, key, port, open_port, ro_dir, rw_dir)
        finally:
            subprocess.run(["podman", "rm", "--force", container], check=False, capture_output=True)


def test_ssh_through_podman_exec_waits_for_the_boot(vm: BoxVm) -> None:
    result = vm.exec("ssh", "--", "sh", "-c", "cat /usr/share/bootc-box-fixture-marker; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout == f"{MARKER}\n"


def test_podman_logs_show_progress_and_the_console(vm: BoxVm) -> None:
    logs = container_logs(vm.container)
    assert "bootc-box: Booting localhost/bootc-box-fixture:latest" in logs
    assert "Linux version" in logs  # the guest kernel's first console line
    assert "Reached target" in logs  # systemd in the guest


def test_a_read_only_bind_is_read_and_refuses_writes(vm: BoxVm) -> None:
    read = vm.exec("ssh", "--", "cat", "/mnt/ro/hello")
    assert (read.returncode, read.stdout) == (0, "from the host\n")
    write = vm.exec("ssh", "--", "touch", "/mnt/ro/new")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    assert not (vm.ro_dir / "new").exists()


def test_host_edits_to_a_bind_reach_the_guest(vm: BoxVm) -> None:
    """A bind is the user's directory, edited on the host while the guest runs:
    the guest must not keep serving what it read before."""
    (vm.ro_dir / "edited").write_text("first\n")
    assert vm.exec("ssh", "--", "cat", "/mnt/ro/edited").stdout == "first\n"
    (vm.ro_dir / "edited").write_text("second, longer\n")
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline and seen != "second, longer\n":
        seen = vm.exec("ssh", "--", "cat", "/mnt/ro/edited").stdout
    assert seen == "second, longer\n"


def test_virtiofsd_runs_without_network_or_the_boxs_processes(vm: BoxVm) -> None:
    """Each virtiofsd (root, two binds) serves the guest from its own sandbox:
    this box (rootful, the host's store mounted) allows the namespace one, so
    not QEMU's network. (Where it does not, chroot: test_rootless.py.)"""

    up = vm.exec("ssh", "--", "true")  # QEMU and its servers run from here on
    assert up.returncode == 0, up.stderr
    # This box's processes only (its cgroup), whatever else runs on the host.
    init = podman("inspect", "--format", "{{.State.Pid}}", vm.container)
    box_cgroup = Path(f"/proc/{init}/cgroup").read_text()

    def in_box(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/cgroup").read_text() == box_cgroup
        except FileNotFoundError:
            return False

    def pids(pattern: str) -> list[str]:
        found = subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
        )
        return [pid for pid in found.stdout.split() if in_box(pid)]

    (qemu,) = pids("^[^ ]*qemu-system-x86_64 ")

    def namespaces(pid: str) -> tuple[str, str]:
        return os.readlink(f"/proc/{pid}/ns/net"), os.readlink(f"/proc/{pid}/ns/pid")

    qemu_net, qemu_pid = namespaces(qemu)
    # virtiofsd --sandbox namespace: a parent, and the server it forked into
    # a PID namespace of its own, where the box's processes are not, and a
    # network namespace without QEMU's network. One server per share: the
    # root and the two binds.
    servers = pids("^[^ ]*virtiofsd --socket-path")
    sandboxed = [
        p for p in servers if qemu_net != namespaces(p)[0] and qemu_pid != namespaces(p)[1]
    ]
    assert len(sandboxed) == 3, [(p, namespaces(p)) for p in servers]


def test_a_writable_bind_reaches_the_host(vm: BoxVm) -> None:
    result = vm.exec("ssh", "--", "sh", "-c", "echo from the guest > /mnt/rw/out")
    assert result.returncode == 0, result.stderr
    assert (vm.rw_dir / "out").read_text() == "from the guest\n"
    assert (vm.rw_dir / "out").stat().st_uid == USER


def test_guest_root_leaves_no_root_or_setuid_root_file_in_a_writable_bind(vm: BoxVm) -> None:
    """Guest root's files in the user's directory are the user's: a copy of
    /bin/sh made setuid there must not run as root on the host."""
    result = vm.exec(
        "ssh", "--", "cp /bin/sh /mnt/rw/sh && chmod 4755 /mnt/rw/sh && mkdir /mnt/rw/dir"
        " && chown 0:0 /mnt/rw/dir && findmnt -no OPTIONS /mnt/rw",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {"nosuid", "nodev"} <= set(result.stdout.strip().split(","))
    for made in (vm.rw_dir / "sh", vm.rw_dir / "dir"):
        info = made.stat()
        assert (info.st_uid, info.st_gid) == (USER, USER), made
    # The user's own files are root's to the guest, which can go on using them.
    owner = vm.exec("ssh", "--", "stat -c %u:%g /mnt/rw/sh /mnt/rw")
    assert owner.stdout.split() == ["0:0", "0:0"], owner.stderr


def test_a_published_port_answers_on_the_host(vm: BoxVm) -> None:
    """--publish PORT:22: the guest's sshd greets a host client."""
    with socket.create_connection(("127.0.0.1", vm.published_port), timeout=30) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")


def test_ports_are_on_loopback_unless_an_address_is_given(vm: BoxVm) -> None:
    address = host_address()
    if address is None or address.startswith("127."):
        pytest.skip("this host has no address but loopback to reach a port from")
    with socket.create_connection((address, vm.open_port), timeout=30) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, vm.published_port), timeout=30).close()


def test_the_guest_cannot_reach_the_hosts_loopback(vm: BoxVm) -> None:
    """This box shares the host's network (as the Action runs it): under
    QEMU's user network 10.0.2.2 was the host's 127.0.0.1, where the host's
    local services and other VMs' SSH listen. The same service is reachable
    at the host's own address, as any host on the network is."""
    address = host_address()
    if address is None or address.startswith("127."):
        pytest.skip("this host has no address but loopback to compare with")
    with serve_secret("0.0.0.0") as (port, secret):
        through_loopback = vm.exec("ssh", "--", guest_reads_tcp("10.0.2.2", port))
        assert secret.decode() not in through_loopback.stdout
        assert through_loopback.returncode != 0
        outside = vm.exec("ssh", "--", guest_reads_tcp(address, port))
        assert outside.stdout == secret.decode() + "\n", outside.stderr


def test_inspect_is_enough_for_tmt(vm: BoxVm, tmp_path: Path) -> None:
    """tmt provisions the running VM with --how connect, from inspect alone."""
    info = json.loads(vm.exec("inspect", "--json").stdout)
    assert info["state"] == "running"
    assert info["ssh"]["key"] == str(vm.key)
    tree = tmp_path / "tree"
    (tree / ".fmf").mkdir(parents=True)
    (tree / ".fmf/version").write_text("1\n")
    (tree / "smoke.fmf").write_text(
        "summary: the VM answers\nexecute:\n    how: tmt\n"
        "    script: cat /usr/share/bootc-box-fixture-marker\n"
    )
    ssh = info["ssh"]
    tmt = Path(sys.executable).with_name("tmt")
    result = subprocess.run(
        # Under tmp_path, a path too long for tmt's SSH master connection:
        # tmt would wait 30 s for it to start (see tmt_plugin.py).
        [tmt, "--root", tree, "run", "--id", tmp_path / "run", "--all", "--skip", "prepare",
         "provision", "--how", "connect", "--guest", ssh["host"], "--port", str(ssh["port"]),
         "--user", ssh["user"], "--key", ssh["key"]],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "total: 1 test passed" in result.stdout + result.stderr
    (output,) = (tmp_path / "run").glob("smoke/execute/data/guest/*/script-00-*/output.txt")
    # (ssh's own "Permanently added ..." warning may come first.)
    assert output.read_text().splitlines()[-1] == MARKER


def test_ssh_accepts_only_the_host_key_the_vm_was_given(vm: BoxVm) -> None:
    """This VM booted cold: its host key was made on the host and handed
    over as a credential, so no login trusts a key on first sight. Then
    another machine answers on its port (the same guest with a new key):
    ssh refuses it. (Last but one here: the VM is unreachable after.)"""
    info = json.loads(vm.exec("inspect", "--json").stdout)
    shown = vm.exec("ssh", "--", "cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert " ".join(shown.stdout.split()[:2]) == info["ssh"]["host_key"], shown.stderr
    swapped = vm.exec(
        "ssh", "--",
        "ssh-keygen -q -t ed25519 -N '' -f /tmp/k && cp /tmp/k /etc/ssh/ssh_host_ed25519_key"
        " && cp /tmp/k.pub /etc/ssh/ssh_host_ed25519_key.pub && systemctl restart ssh",
    )  # fmt: skip
    assert swapped.returncode == 0, swapped.stderr
    refused = vm.exec("ssh", "--", "true")
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


def test_podman_stop_powers_the_vm_off(vm: BoxVm) -> None:
    """Last here: the guest gets its ACPI power button and shuts down."""
    before = host_state()
    podman("stop", "--time", "90", vm.container)
    assert podman("inspect", "--format", "{{.State.ExitCode}}", vm.container) == "143"
    logs = container_logs(vm.container)
    assert "bootc-box: Powering the VM off" in logs
    assert "reboot: Power down" in logs
    assert "bootc-box: The VM powered off" in logs
    after = host_state()
    assert not any(
        "qemu-system" in p or "virtiofsd" in p for p in after.processes - before.processes
    )
    assert vm.cache.nested_containers() == []
    assert vm.cache.leftovers() == []
