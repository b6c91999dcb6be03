"""What a person uses every day besides run: images, cp, ssh-config, and
shell completion from the box image. One long-lived box on the host's
network holds a detached VM (restored from the session's saved state) whose
SSH key and work directory are shared with the host at the same path, as
the GitHub Action does."""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_box.network import free_port
from tests.e2e.conftest import (
    BOOT_DEADLINE,
    BOX,
    FIXTURE,
    CacheVolume,
    box_argv,
    guest_reads_tcp,
    podman,
    serve_secret,
)

MARKER = "/usr/share/bootc-box-fixture-marker"
# Small, so that a test can make the guest write ten times as much.
LOG_LIMIT = 64 * 1024
# A UDP echo service in the guest (perl is in the fixture; nc and socat are not).
UDP_ECHO = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 7777, Proto => 'udp')"
    ' or die $!; while ($s->recv(my $m, 1024)) { $s->send("echo:$m") }'
)


@dataclass(frozen=True)
class Desk:
    container: str
    work: Path
    udp_port: int  # -p udp_port:7777/udp

    def bootc_box(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            ["podman", "exec", self.container, "bootc-box", *args],
            capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
        )  # fmt: skip

    def ssh(self, *command: str) -> "subprocess.CompletedProcess[str]":
        return self.bootc_box("ssh", "web", "--", *command)

    def as_root_in_box(self, *argv: str) -> str:
        return podman("exec", self.container, *argv)


def desk_glob(desk: Desk, pattern: str) -> list[str]:
    return desk.as_root_in_box("sh", "-c", f"ls -d {pattern}").split()


@pytest.fixture(scope="module")
def desk(warm_volume: CacheVolume, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    work = tmp_path_factory.mktemp("desk")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"bootc-box-test-desk-{time.monotonic_ns()}"
    options = ("-d", "--name", name, "--network", "host", "-v", f"{work}:{work}",
               "-e", f"BOOTC_BOX_LOG_LIMIT={LOG_LIMIT}")  # fmt: skip
    subprocess.run(box_argv("sleep", "infinity", volume=warm_volume.name, options=options),
                   check=True, capture_output=True)  # fmt: skip
    try:
        desk = Desk(name, work, free_port(socket.SOCK_DGRAM))
        started = desk.bootc_box(
            "run", "-d", "--name", "web", "--ssh-key", str(key),
            "-p", f"{desk.udp_port}:7777/udp", "--allow-host-loopback", FIXTURE,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        up = desk.ssh("true")
        assert up.returncode == 0, up.stderr
        yield desk
        # Stopped by its supervisor, which removes its mount container from
        # the shared volume; killing the box would leave it there.
        removed = desk.bootc_box("rm", "--force", "web")
        assert removed.returncode == 0, removed.stderr
        assert warm_volume.nested_containers() == []
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "0", name],
                       check=False, capture_output=True)  # fmt: skip


def test_images_lists_bootable_images_only(desk: Desk) -> None:
    result = desk.bootc_box("images", "--json")
    assert result.returncode == 0, result.stderr
    listed = {name: image for image in json.loads(result.stdout) for name in image["names"]}
    fixture = listed[FIXTURE]
    assert fixture["store"] == "host"
    assert fixture["kernels"] == [kernel_of_fixture(desk)]
    assert fixture["id"] == podman("image", "inspect", "--format", "{{.Id}}", FIXTURE)
    # The base image has no kernel, and the box image is no bootc image.
    assert "localhost/debian:trixie" not in listed
    assert BOX not in listed
    table = desk.bootc_box("images")
    assert table.stdout.splitlines()[0].split()[:5] == [
        "REPOSITORY",
        "TAG",
        "IMAGE",
        "ID",
        "KERNEL",
    ]
    assert any(line.split()[:2] == ["localhost/bootc-box-fixture", "latest"]
               for line in table.stdout.splitlines())  # fmt: skip
    # Looking into images left no mount containers behind.
    assert desk.bootc_box("cache", "prune").stderr.startswith("bootc-box: Removed 0 stale mounts")


def kernel_of_fixture(desk: Desk) -> str:
    return desk.ssh("uname", "-r").stdout.strip()


def test_cp_a_file_and_a_directory_into_the_vm(desk: Desk) -> None:
    source = desk.work / "in"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "deep.txt").write_text("deep\n")
    (source / "top.txt").write_text("top\n")
    single = desk.work / "note.txt"
    single.write_text("a note\n")
    assert desk.bootc_box("cp", str(source), "web:/root/").returncode == 0
    renamed = desk.bootc_box("cp", str(single), "web:/root/renamed.txt")
    assert renamed.returncode == 0, renamed.stderr
    seen = desk.ssh("sh", "-c", "cat /root/in/sub/deep.txt /root/in/top.txt /root/renamed.txt; "
                    "stat -c %U /root/in/top.txt; ls -A /root | grep -c bootc-box-cp")  # fmt: skip
    assert seen.stdout.splitlines() == ["deep", "top", "a note", "root", "0"], seen.stderr


def test_cp_a_file_and_a_directory_out_of_the_vm(desk: Desk) -> None:
    out = desk.work / "out"
    out.mkdir()
    assert desk.bootc_box("cp", f"web:{MARKER}", str(out / "marker")).returncode == 0
    result = desk.bootc_box("cp", "web:/etc/ssh", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "marker").read_text() == "bootc-box fixture\n"
    assert (out / "ssh" / "sshd_config").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["marker", "ssh"]  # nothing half-copied


def test_cp_of_what_is_not_there_is_one_line_and_leaves_nothing(desk: Desk) -> None:
    out = desk.work / "missing"
    out.mkdir()
    result = desk.bootc_box("cp", "web:/no/such/file", str(out))
    assert result.returncode == 125
    assert result.stderr == (
        "bootc-box: error: cannot copy /no/such/file from the VM: "
        "/no/such/file: no such file or directory in the VM\n"
    )
    assert list(out.iterdir()) == []
    result = desk.bootc_box("cp", str(out), "web:/no/such/dir/x")
    assert result.returncode == 125
    assert "no directory /no/such/dir in the VM" in result.stderr


def test_ssh_config_lets_ssh_and_scp_reach_the_vm_by_name(desk: Desk) -> None:
    config = desk.work / "ssh_config"
    printed = desk.bootc_box("ssh-config", "web")
    assert printed.returncode == 0, printed.stderr
    assert desk.bootc_box("ssh-config").stdout == printed.stdout  # the only running VM
    config.write_text(printed.stdout)
    result = subprocess.run(["ssh", "-F", str(config), "web", "cat", MARKER],
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bootc-box fixture\n"
    copied = desk.work / "scp-marker"
    scp = subprocess.run(["scp", "-F", str(config), f"web:{MARKER}", str(copied)],
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    assert copied.read_text() == "bootc-box fixture\n"


def test_the_restored_vm_shows_host_keys_made_for_it_alone(desk: Desk) -> None:
    """Restored from the session's saved state, the guest was given new host
    keys made on the host: ssh pins the new key, not the saved guest's."""
    info = json.loads(desk.bootc_box("inspect", "--json", "web").stdout)
    shown = desk.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub")
    assert " ".join(shown.stdout.split()[:2]) == info["ssh"]["host_key"], shown.stderr
    saved = desk.as_root_in_box("sh", "-c", "cat /cache/snapshots/*/ssh_host_ed25519_key.pub")
    assert info["ssh"]["host_key"] not in saved
    assert saved.startswith("ssh-ed25519 ")


def test_the_box_prints_its_version_and_completion_without_privileges(tmp_path: Path) -> None:
    version = subprocess.run(["podman", "run", "--rm", BOX, "--version"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("bootc-box, version ")
    script = tmp_path / "bootc-box.bash"
    with script.open("w") as out:
        subprocess.run(["podman", "run", "--rm", BOX, "completion", "bash"], stdout=out, check=True)
    loaded = subprocess.run(["bash", "-c", f"source {script}; complete -p bootc-box"],
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ))  # fmt: skip
    assert loaded.stdout.strip() == "complete -o nosort -F _bootc_box_completion bootc-box"


def test_a_udp_port_is_forwarded(desk: Desk) -> None:
    server = desk.ssh(
        "sh", "-c", 'setsid -f perl -e "$1" </dev/null >/dev/null 2>&1', "sh", UDP_ECHO
    )
    assert server.returncode == 0, server.stderr
    listening = desk.ssh("sh", "-c", "until ss -lun | grep -q ':7777 '; do sleep 0.2; done")
    assert listening.returncode == 0, listening.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"ping", ("127.0.0.1", desk.udp_port))
        assert client.recvfrom(1024)[0] == b"echo:ping"


def test_allow_host_loopback_opens_the_hosts_loopback_to_the_guest(desk: Desk) -> None:
    """The desk box shares the host's network and its VM was run with
    --allow-host-loopback (closed by default: test_vm_box.py)."""
    with serve_secret("127.0.0.1") as (port, secret):
        read = desk.ssh(guest_reads_tcp("10.0.2.2", port))
    assert (read.returncode, read.stdout) == (0, secret.decode() + "\n"), read.stderr


def test_a_chatty_guest_cannot_fill_the_boxs_memory_with_its_console(desk: Desk) -> None:
    """The console log and the supervisor's log (in /run, which is memory)
    keep about their last LOG_LIMIT bytes each, however much the guest says."""
    lines = 10 * LOG_LIMIT // 64
    said = desk.ssh(
        "sh", "-c", f"seq -f '%062g' {lines} > /dev/ttyS0; echo said-it-all > /dev/ttyS0"
    )
    assert said.returncode == 0, said.stderr
    vm = "/run/bootc-box/vms/web"
    logs = [f"{vm}/supervisor.log", *desk_glob(desk, f"{vm}/boot-*/console.log")]
    deadline = time.monotonic() + 120
    while "said-it-all" not in desk.bootc_box("logs", "web").stdout:
        assert time.monotonic() < deadline, "the console's last line never reached the logs"
        time.sleep(0.5)
    sizes = desk.as_root_in_box("stat", "-c", "%n %s", *logs, *(f"{p}.1" for p in logs))
    for line in sizes.splitlines():
        path, size = line.rsplit(" ", 1)
        assert int(size) < 4 * LOG_LIMIT, f"{path} holds {size} bytes"
    # What is kept is the end, in order: `logs` reads FILE.1, then FILE.
    shown = desk.bootc_box("logs", "web").stdout
    assert f"{lines:062d}" in shown
    assert (
        shown.index(f"{lines - 1:062d}") < shown.index(f"{lines:062d}") < shown.index("said-it-all")
    )
