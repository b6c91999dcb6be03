#!/usr/bin/env python3
"""How many VMs one box holds at once: start detached VMs in one long-lived
box, one after another, each booted to SSH while the earlier ones keep
running, until a boot fails or takes longer than the deadline, an earlier VM
stops answering, or MAX is reached. Reports each boot's time, as a ratio to
the first boot (the same machine with nothing else running), and the host's
free memory.

Usage: bench/capacity.py [MAX] [MEMORY]    (defaults: 12 VMs of 1G)"""

import json
import subprocess
import sys
import time
from pathlib import Path

BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
DEADLINE = 900  # seconds for one boot to answer SSH


def in_lab(lab: str, *args: str, timeout: float = DEADLINE) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["podman", "exec", lab, "bootc-box", *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> int:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    memory = sys.argv[2] if len(sys.argv) > 2 else "1G"
    lab = f"bootc-box-capacity-{int(time.time())}"
    subprocess.run(
        ["podman", "run", "-d", "--name", lab, "--device", "/dev/kvm",
         "-v", "/var/lib/containers/storage:/var/lib/containers/host-storage:ro",
         BOX, "sleep", "infinity"],
        check=True, capture_output=True,
    )  # fmt: skip
    boots: list[float] = []
    reason = f"reached MAX={limit}"
    try:
        for n in range(1, limit + 1):
            name = f"vm{n}"
            started = time.monotonic()
            run = in_lab(lab, "run", "-d", "--name", name, "--memory", memory,
                         "--cpus", "1", "--timeout", str(DEADLINE), FIXTURE)  # fmt: skip
            ssh = (
                in_lab(lab, "ssh", "--timeout", str(DEADLINE), name, "--", "true")
                if (run.returncode == 0)
                else run
            )
            if ssh.returncode != 0:
                reason = f"VM {n} did not boot: {(ssh.stderr or run.stderr).strip()[-300:]}"
                break
            boots.append(time.monotonic() - started)
            answering = [
                i for i in range(1, n + 1)
                if in_lab(lab, "ssh", f"vm{i}", "--", "true", timeout=120).returncode == 0
            ]  # fmt: skip
            print(
                f"{n} VMs: boot of vm{n} took {boots[-1]:.0f} s "
                f"({boots[-1] / boots[0]:.2f} x the first); {len(answering)}/{n} answer SSH; "
                f"host MemAvailable {available_mib()} MiB",
                flush=True,
            )
            if len(answering) < n:
                reason = f"with {n} VMs, only {len(answering)} answered SSH"
                break
        states = json.loads(in_lab(lab, "list", "--json").stdout or "[]")
        print(f"stopped: {reason}")
        print(f"held at once: {len(boots)} VMs of {memory}, 1 vCPU each, all answering SSH")
        print("states:", ", ".join(f"{s['name']}={s['state']}" for s in states))
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "60", lab], check=False, capture_output=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
