#!/usr/bin/env python3
"""How many restored VMs one box holds at once: in one long-lived box with a
fresh cache volume, the first detached VM boots cold and saves its state
(--warm always); every later one is restored from that state, one after
another, while the earlier ones keep running, until a start fails or takes
longer than the deadline, or MAX is reached. Reports each start's time
(restore to SSH answering) as a ratio to the first restore (the same state
with one VM running), the host memory each VM costs (the drop in the host's
MemAvailable, and the proportional set size of its QEMU, virtiofsd and
passt), and at the end whether every VM still answers SSH.

Usage: bench/capacity.py [MAX] [MEMORY] [--json FILE]   (defaults: 64 VMs of 1G)"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
HOST_STORE = "/var/lib/containers/storage:/var/lib/containers/host-storage:ro"
DEADLINE = 900  # seconds for one start to answer SSH

# Run in the box: the proportional set size (kB) of each VM's processes,
# found by the VM directory named in their command lines.
PSS_BY_VM = r"""
import json, os, re, sys
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():  # this script's own line names both patterns
        continue
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        name = re.search(r"/run/bootc-box/vms/([^/\x00]+)/", argv)
        if not name or not re.search(r"qemu-system|virtiofsd|passt", argv):
            continue
        pss = sum(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup")
                  if line.startswith("Pss:"))
    except OSError:
        continue
    found[name[1]] = found.get(name[1], 0) + pss
json.dump(found, sys.stdout)
"""


def in_lab(lab: str, *args: str, timeout: float = DEADLINE) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["podman", "exec", lab, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def start_vm(lab: str, name: str, memory: str, *options: str) -> tuple[float, str]:
    """Start a detached VM and wait until it answers SSH: seconds, and how it started."""
    started = time.monotonic()
    run = in_lab(lab, "bootc-box", "run", "-d", "--name", name, "--memory", memory, "--cpus", "1",
                 "--timeout", str(DEADLINE), *options, FIXTURE)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"{name} did not start: {run.stderr.strip()[-300:]}")
    ssh = in_lab(lab, "bootc-box", "ssh", "--timeout", str(DEADLINE), name, "--", "true")
    if ssh.returncode != 0:
        raise RuntimeError(f"{name} did not answer SSH: {ssh.stderr.strip()[-300:]}")
    took = time.monotonic() - started
    kind = "restored" if "Restoring" in run.stderr else "cold"
    return took, kind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("limit", nargs="?", type=int, default=64)
    parser.add_argument("memory", nargs="?", default="1G")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stamp = int(time.time())
    lab, volume = f"bootc-box-capacity-{stamp}", f"bootc-box-capacity-{stamp}"
    subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
    subprocess.run(
        ["podman", "run", "-d", "--name", lab, "--device", "/dev/kvm", "-v", HOST_STORE,
         "-v", f"{volume}:/cache", BOX, "sleep", "infinity"],
        check=True, capture_output=True,
    )  # fmt: skip
    starts: list[float] = []
    rows: list[dict[str, float]] = []
    reason = f"reached MAX={args.limit}"
    try:
        # The state every later VM restores: saved by a cold boot, then
        # that VM is gone, so the first restore is the baseline.
        start_vm(lab, "seed", args.memory, "--warm", "always")
        in_lab(lab, "bootc-box", "rm", "--force", "seed")
        before = available_mib()
        for n in range(1, args.limit + 1):
            try:
                took, kind = start_vm(lab, f"vm{n}", args.memory)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                reason = str(e)
                break
            if kind != "restored":
                reason = f"vm{n} booted cold instead of restoring"
                break
            starts.append(took)
            pss = json.loads(in_lab(lab, "python3", "-c", PSS_BY_VM).stdout or "{}")
            per_vm = statistics.mean(pss.values()) / 1024 if pss else 0.0
            drop = (before - available_mib()) / n
            rows.append({"vms": n, "start": took, "pss_mib": per_vm, "available_drop_mib": drop})
            print(
                f"{n} VMs: vm{n} restored and answered SSH in {took:.1f} s "
                f"({took / starts[0]:.2f} x the first); per VM: PSS {per_vm:.0f} MiB, "
                f"host MemAvailable -{drop:.0f} MiB; host MemAvailable {available_mib()} MiB",
                flush=True,
            )
        answering = sum(
            in_lab(lab, "bootc-box", "ssh", f"vm{i}", "--", "true", timeout=300).returncode == 0
            for i in range(1, len(starts) + 1)
        )
        print(f"stopped: {reason}")
        print(
            f"held at once: {len(starts)} restored VMs of {args.memory}, 1 vCPU each; "
            f"{answering}/{len(starts)} answer SSH at the end"
        )
        if starts:
            print(
                f"start times: first {starts[0]:.1f} s, last {starts[-1]:.1f} s "
                f"({starts[-1] / starts[0]:.2f} x), median {statistics.median(starts):.1f} s"
            )
        if args.json:
            result = {"memory": args.memory, "stopped": reason, "answering": answering,
                      "vms": rows}  # fmt: skip
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "120", lab], check=False, capture_output=True
        )
        subprocess.run(["podman", "volume", "rm", "--force", volume], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
