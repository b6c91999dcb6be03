#!/usr/bin/env python3
"""Cold boots against warm starts of the fixture, measured in one run:
`podman run ... BOX run [--warm never] FIXTURE -- true`, end to end and to
the moment the VM answers SSH ("VM up in" on stderr), medians of RUNS runs
of each, interleaved, on one cache volume, plus the saved state's size on
disk. The cold runs are the baseline. Before them: the image's first run
(--warm auto: boots, saves nothing), against a first run with --warm never
on another fresh volume (both pay for a new volume and the image's boot
files, as a CI job's run of a new image does), medians of RUNS pairs; and
its second run (boots and saves), against the cold runs' median.
Usage: bench/warm_start.py [RUNS]"""

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
HOST_STORE = "/var/lib/containers/storage:/var/lib/containers/host-storage:ro"
# The summary line: "bootc-box: VM up in 41 s, cold (pull 0 s, ...)".
UP = re.compile(rb"VM up in \d+ s, (\w+)")


def timed_run(
    volume: str,
    *options: str,
    target: tuple[str, ...] = (FIXTURE, "--", "true"),
    command: str = "run",
    box_options: tuple[str, ...] = (),
) -> tuple[float, float, str]:
    """Seconds to "VM up" and to the end of the run, and how it started."""
    argv = ["podman", "run", "--rm", "--device", "/dev/kvm", "-v", HOST_STORE,
            "-v", f"{volume}:/cache", *box_options, BOX, command, *options, *target]  # fmt: skip
    started = time.monotonic()
    up, kind, seen = float("nan"), "?", []
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if match := UP.search(line):
                up = time.monotonic() - started
                kind = match[1].decode()
        status = proc.wait()
    if status != 0:
        raise SystemExit(f"run failed ({status}): {b''.join(seen[-5:]).decode()}")
    return up, time.monotonic() - started, kind


def state_on_disk(volume: str) -> int:
    mountpoint = subprocess.run(
        ["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return sum(p.stat().st_blocks * 512 for p in Path(mountpoint).glob("snapshots/*/state"))


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    volume = f"bootc-box-bench-{time.monotonic_ns()}"
    never = f"{volume}-never"
    firsts: dict[str, list[float]] = {"never": [], "auto": []}
    pair = (("never", never, ("--warm", "never")), ("auto", volume, ()))
    try:
        for run in range(1, runs + 1):
            for name in (volume, never):
                subprocess.run(["podman", "volume", "rm", "-f", name], check=False,
                               capture_output=True)  # fmt: skip
                subprocess.run(["podman", "volume", "create", name], check=True,
                               capture_output=True)  # fmt: skip
            for kind_of, on, options in pair:
                up, end, kind = timed_run(on, *options)
                firsts[kind_of].append(end)
                print(f"first run {run}, --warm {kind_of}, {kind}: up {up:.1f} s, end {end:.1f} s",
                      file=sys.stderr)  # fmt: skip
        up, second, kind = timed_run(volume)
        print(f"second run (saves its state), {kind}: up {up:.1f} s, end {second:.1f} s",
              file=sys.stderr)  # fmt: skip
        results: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        for run in range(1, runs + 1):
            for name, options in (("cold", ("--warm", "never")), ("warm", ())):
                up, end, kind = timed_run(volume, *options)
                expected = "cold" if name == "cold" else "restored"
                if kind != expected:
                    raise SystemExit(f"a {name} run started {kind}, not {expected}")
                results[name].append((up, end))
                print(f"run {run} {name}: up {up:.1f} s, end {end:.1f} s", file=sys.stderr)
        size = state_on_disk(volume)
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume, never], check=True,
                       capture_output=True)  # fmt: skip
    cold_up = statistics.median(r[0] for r in results["cold"])
    cold_end = statistics.median(r[1] for r in results["cold"])
    print(f"{'case':<6} {'to SSH (median)':>16} {'end to end':>11} {'speed-up':>9}")
    for name, times in results.items():
        up = statistics.median(r[0] for r in times)
        end = statistics.median(r[1] for r in times)
        print(f"{name:<6} {up:>14.1f} s {end:>9.1f} s {cold_end / end:>8.1f}x")
    print(f"to SSH, cold / warm: {cold_up / statistics.median(r[0] for r in results['warm']):.1f}x")
    first, baseline = statistics.median(firsts["auto"]), statistics.median(firsts["never"])
    print(f"first run: {first:.1f} s end to end, {first / baseline:.2f}x a first run with"
          f" --warm never ({baseline:.1f} s)")  # fmt: skip
    print(f"second run (saves): {second:.1f} s end to end, {second / cold_end:.2f}x a cold run")
    print(f"saved state on disk: {size / 2**20:.0f} MiB; {runs} runs of each")


if __name__ == "__main__":
    main()
