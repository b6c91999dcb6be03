"""Several VMs in one long-lived box (`podman run -d BOX sleep infinity`,
then `podman exec BOX bootc-box ...`): run -d, list, ssh, logs, stop, rm,
and what a supervisor killed with SIGKILL leaves (a dead VM, which list
reports and rm cleans)."""

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import (
    BOOT_DEADLINE,
    FIXTURE,
    CacheVolume,
    in_box,
    long_lived_box,
    new_cache_volume,
)


@dataclass(frozen=True)
class Lab:
    container: str
    cache: CacheVolume

    def run(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            ["podman", "exec", self.container, *args],
            capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
        )  # fmt: skip

    def bootc_box(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return in_box(self.container, *args)

    def vms(self) -> dict[str, dict[str, Any]]:
        listing = self.bootc_box("list", "--json")
        assert listing.returncode == 0, listing.stderr
        return {vm["name"]: vm for vm in json.loads(listing.stdout)}

    def helpers(self) -> list[str]:
        """QEMU and virtiofsd processes in the box."""
        ps = self.run("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo")
        return [w for w in ps.stdout.split() if w.endswith(("qemu-system-x86_64", "virtiofsd"))]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with new_cache_volume() as cache, long_lived_box(cache, "lab") as name:
        yield Lab(name, cache)


def test_a_detached_vm_from_start_to_removal(lab: Lab) -> None:
    started = lab.bootc_box(
        "run", "-d", "--name", "web", "--stop-timeout", "60",
        "--karg", "bootc_box.test=42", "--cpus", "1", "--memory", "1536M", FIXTURE,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout == "web\n"
    assert "bootc-box: Booting" in started.stderr  # run -d returns once QEMU runs
    assert lab.vms()["web"]["state"] in ("booting", "running")

    result = lab.bootc_box(
        "ssh", "web", "--", "sh", "-c", "cat /usr/share/bootc-box-fixture-marker; exit 5"
    )
    assert result.returncode == 5, result.stderr
    assert result.stdout == "bootc-box fixture\n"
    web = lab.vms()["web"]
    assert web["state"] == "running"
    assert web["ssh"]["host"] == "127.0.0.1"
    assert web["ssh"]["port"] > 0

    # The guest got the shape asked for: --karg, --cpus, --memory.
    shape = lab.bootc_box(
        "ssh",
        "web",
        "--",
        "sh",
        "-c",
        "cat /proc/cmdline; nproc; awk '/^MemTotal/ {print $2}' /proc/meminfo",
    ).stdout.splitlines()
    cmdline = shape[0].split()
    assert "bootc_box.test=42" in cmdline
    # The image's kargs.d applies, before --karg (which can so override it),
    # and a file for another architecture does not.
    assert cmdline.index("bootc_box.kargs_d=1") < cmdline.index("bootc_box.test=42")
    assert "bootc_box.other_arch=1" not in cmdline
    assert shape[1] == "1"
    assert 1_200_000 < int(shape[2]) <= 1536 * 1024  # kB, less what the kernel keeps

    # The text forms a person reads.
    listing = lab.bootc_box("list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "STATE", "IMAGE", "SSH", "CREATED"]
    assert listing[1].split()[:4] == ["web", "running", FIXTURE, f"127.0.0.1:{web['ssh']['port']}"]
    inspected = lab.bootc_box("inspect", "web").stdout.splitlines()
    assert "state: running" in inspected
    assert f"ssh_port: {web['ssh']['port']}" in inspected

    taken = lab.bootc_box("run", "-d", "--name", "web", FIXTURE)
    assert taken.returncode == 125
    assert "the name web is already used by a VM" in taken.stderr

    with subprocess.Popen(
        ["podman", "exec", lab.container, "bootc-box", "logs", "-f", "web"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as following:  # fmt: skip
        stopped = lab.bootc_box("stop", "web")
        # logs -f ends when the VM does, with the power-off in it.
        followed, _ = following.communicate(timeout=60)
    assert following.returncode == 0
    assert "bootc-box: Powering the VM off" in followed
    assert stopped.returncode == 0, stopped.stderr
    assert lab.vms()["web"]["state"] == "stopped"
    assert lab.helpers() == []
    logs = lab.bootc_box("logs", "web").stdout
    assert "Linux version" in logs
    assert "bootc-box: The VM powered off" in logs

    removed = lab.bootc_box("rm", "web")
    assert (removed.returncode, removed.stdout) == (0, "web\n")
    assert lab.vms() == {}
    assert lab.cache.nested_containers() == []


def test_a_killed_supervisor_leaves_a_dead_vm_that_rm_cleans(lab: Lab) -> None:
    started = lab.bootc_box("run", "-d", "--name", "doomed", FIXTURE)
    assert started.returncode == 0, started.stderr
    pid = lab.vms()["doomed"]["supervisor_pid"]
    # bash's kill: the box has no procps.
    assert lab.run("bash", "-c", f"kill -KILL {pid}").returncode == 0

    assert lab.vms()["doomed"]["state"] == "dead"
    assert lab.helpers() == []  # QEMU and virtiofsd die with their supervisor
    assert lab.cache.nested_containers() == []  # list removed the image mount it left
    assert lab.bootc_box("rm", "doomed").returncode == 0
    assert lab.vms() == {}


def test_a_vm_whose_virtiofsd_dies_fails_with_the_reason(lab: Lab) -> None:
    """Without its virtiofsd the guest would hang on its next read of /."""
    started = lab.bootc_box("run", "-d", "--name", "fragile", FIXTURE)
    assert started.returncode == 0, started.stderr
    killed = lab.run(
        "bash", "-c",
        "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c | grep -q 'virtiofsd.*rootfs.sock'"
        " && { p=${c#/proc/}; kill -KILL ${p%/cmdline}; echo killed; }; done",
    )  # fmt: skip
    assert "killed" in killed.stdout, killed.stderr
    deadline = time.monotonic() + 120
    while (vm := lab.vms()["fragile"])["state"] != "failed":
        assert time.monotonic() < deadline, vm
        time.sleep(0.5)
    assert "virtiofsd serving" in vm["error"]
    assert "the guest lost its files" in vm["error"]
    assert lab.helpers() == []
    assert lab.cache.nested_containers() == []
    assert lab.bootc_box("rm", "fragile").returncode == 0


def test_stop_and_rm_take_several_vms_and_force(lab: Lab) -> None:
    """Stopped while still booting: the power button may go unheard that early,
    so a short --stop-timeout ends them either way."""
    for name in ("a", "b", "c"):
        started = lab.bootc_box("run", "-d", "--name", name, "--stop-timeout", "2", FIXTURE)
        assert started.returncode == 0, started.stderr
    stopped = lab.bootc_box("stop", "a", "b")
    assert (stopped.returncode, stopped.stdout) == (0, "a\nb\n"), stopped.stderr
    states = {name: vm["state"] for name, vm in lab.vms().items()}
    assert states["a"] == states["b"] == "stopped"
    assert states["c"] in ("booting", "running")
    refused = lab.bootc_box("rm", "--all")
    assert refused.returncode == 125
    assert refused.stderr == (
        "bootc-box: error: c still running; stop them first, or pass --force\n"
    )
    removed = lab.bootc_box("rm", "--all", "--force")
    assert (removed.returncode, sorted(removed.stdout.split())) == (0, ["a", "b", "c"])
    assert lab.vms() == {}
    assert lab.helpers() == []
    assert lab.cache.nested_containers() == []


def test_bad_input_to_run_d_fails_at_once_and_leaves_nothing(lab: Lab) -> None:
    missing = lab.bootc_box("run", "-d", "--pull=never", "localhost/no-such-image:1")
    assert missing.returncode == 125
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith("bootc-box: error: image localhost/no-such-image:1 is not in podman's storage")
    )
    assert lab.vms() == {}
    nobody = lab.bootc_box("ssh", "nobody", "--", "true")
    assert nobody.returncode == 125
    assert nobody.stderr == "bootc-box: error: no VM named nobody; see bootc-box list\n"
    assert lab.helpers() == []
