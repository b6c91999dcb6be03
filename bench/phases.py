#!/usr/bin/env python3
"""Where a run's time goes: a cold boot of the fixture, a restore of its
saved state, and a UEFI boot of a disk that to-disk made of the installable
fixture, each `podman run ... BOX run ... -- true`, split into bootc-box's
phases (its progress lines: pull, mount, boot files, boot or restore, save,
ssh), the command and exit (from "VM up" to bootc-box's end: the command,
QEMU stopped, the image unmounted) and the rest of the
`podman run` (the box's start and end). Medians of RUNS runs of each, on one
cache volume; the cold boot is the baseline the others are a ratio to.
Writes JSON to --json FILE too (bench/report.py draws it as stacked bars).
--cases picks some of the three (CI's smoke run takes `restored` alone);
--volume runs on an existing cache volume, which is kept (one that holds the
fixture's saved state spares the cold boot that saves it).
Usage: bench/phases.py [RUNS] [--json FILE] [--cases cold,restored,disk]
[--volume NAME]   (default 3 runs of each case, on a new volume)"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warm_start import BOX, FIXTURE, HOST_STORE

INSTALLABLE = "localhost/bootc-box-installable:latest"
CASES = ("cold", "restored", "disk")
# "bootc-box: 13:44:59 save 2.3 s" (a phase that took 10 s or more: "26 s").
PHASE = re.compile(r"bootc-box: \d\d:\d\d:\d\d ([a-z ]+) (\d+(?:\.\d)?) s$")


def run_phases(volume: str, *args: str, box_options: tuple[str, ...] = ()) -> dict[str, float]:
    """One run's phases in seconds, with "command and exit" and "podman" (the rest)."""
    argv = ["podman", "run", "--rm", "--device", "/dev/kvm", "-v", HOST_STORE,
            "-v", f"{volume}:/cache", *box_options, BOX, "run", *args, "--", "true"]  # fmt: skip
    started = time.monotonic()
    phases: dict[str, float] = {}
    up = None
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
        assert p.stderr is not None
        seen = []
        for line in p.stderr:
            seen.append(line)
            if match := PHASE.match(line.rstrip()):
                phases[match[1]] = phases.get(match[1], 0.0) + float(match[2])
            elif "VM up in" in line:
                up = time.monotonic()
        if p.wait() != 0 or up is None:
            raise SystemExit(f"run failed ({p.returncode}): {''.join(seen[-5:])}")
    ended = time.monotonic()
    phases["command and exit"] = ended - up
    phases["podman"] = max(ended - started - sum(phases.values()), 0.0)
    return phases


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    names = dict.fromkeys(name for run in runs for name in run)
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cases", default=",".join(CASES), help="some of " + ",".join(CASES))
    parser.add_argument("--volume", help="an existing cache volume to run on (kept)")
    args = parser.parse_args()
    chosen = args.cases.split(",")
    if not chosen or not set(chosen) <= set(CASES):
        parser.error(f"--cases takes some of {','.join(CASES)}")
    volume = args.volume or f"bootc-box-bench-{time.monotonic_ns()}"
    if not args.volume:
        subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
    results: dict[str, dict[str, float]] = {}
    try:
        # The state the restores load (not measured: the cold runs are).
        run_phases(volume, "--warm", "always", FIXTURE)
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            disk = Path(tmp) / "disk.raw"
            mount = ("-v", f"{tmp}:{tmp}")
            if "disk" in chosen:
                subprocess.run(
                    ["podman", "run", "--rm", "--device", "/dev/kvm", "-v", HOST_STORE,
                     "-v", f"{volume}:/cache", *mount,
                     BOX, "to-disk", INSTALLABLE, str(disk)],
                    check=True, capture_output=True,
                )  # fmt: skip
            cases = {
                "cold": (("--warm", "never", FIXTURE), ()),
                "restored": ((FIXTURE,), ()),
                "disk": (("--disk", str(disk), "--transient"), mount),
            }
            for name in chosen:
                run_args, options = cases[name]
                runs = [run_phases(volume, *run_args, box_options=options)
                        for _ in range(args.runs)]  # fmt: skip
                results[name] = medians(runs)
                print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in results[name].items()),
                      file=sys.stderr)  # fmt: skip
    finally:
        if not args.volume:
            subprocess.run(
                ["podman", "volume", "rm", "-f", volume], check=True, capture_output=True
            )
    # Without a cold run, ratios are to the first case measured.
    baseline = sum(results["cold" if "cold" in results else chosen[0]].values())
    for name, phases in results.items():
        total = sum(phases.values())
        against = "a cold run" if "cold" in results else chosen[0]
        print(f"{name:<9} {total:6.1f} s  {total / baseline:5.2f}x {against}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "phases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
