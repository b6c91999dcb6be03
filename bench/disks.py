#!/usr/bin/env python3
"""Disk images, measured in one run on one cache volume:
- to-disk of the installable fixture cold (an installer VM runs bootc) and
  from the cache (a copy, no VM); the cold install is the baseline;
- booting the installed disk under UEFI to SSH and to the end of `-- true`,
  against an image run of the same image (direct kernel boot, no warm
  start) as the baseline.
Usage: bench/disks.py [RUNS] (boots are repeated RUNS times, interleaved)."""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warm_start import timed_run

INSTALLABLE = "localhost/bootc-box-installable:latest"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    volume = f"bootc-box-bench-{time.monotonic_ns()}"
    subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="bootc-box-bench-") as tmp:
        out = Path(tmp)
        mount = ("-v", f"{out}:{out}")
        try:
            installs = {}
            for name, output in (("cold", out / "cold.raw"), ("cached", out / "cached.raw")):
                _, took, _ = timed_run(volume, INSTALLABLE, str(output), target=(),
                                       command="to-disk", box_options=mount)  # fmt: skip
                installs[name] = took
                print(f"to-disk {name}: {took:.1f} s", file=sys.stderr)
            (out / "cached.raw").unlink()
            boots: dict[str, list[tuple[float, float]]] = {"image": [], "disk": []}
            for run in range(1, runs + 1):
                image = timed_run(volume, "--warm", "never", target=(INSTALLABLE, "--", "true"))
                disk = timed_run(volume, "--disk", str(out / "cold.raw"), target=("--", "true"),
                                 box_options=mount)  # fmt: skip
                for name, (up, end, _) in (("image", image), ("disk", disk)):
                    boots[name].append((up, end))
                    print(f"run {run} {name}: up {up:.1f} s, end {end:.1f} s", file=sys.stderr)
        finally:
            subprocess.run(["podman", "volume", "rm", "-f", volume], check=True,
                           capture_output=True)  # fmt: skip
    cold = installs["cold"]
    print(f"to-disk cold {cold:.1f} s, from the cache {installs['cached']:.1f} s: "
          f"{cold / installs['cached']:.1f}x faster")  # fmt: skip
    image_up = statistics.median(u for u, _ in boots["image"])
    image_end = statistics.median(e for _, e in boots["image"])
    print(f"{'boot':<6} {'to SSH (median)':>16} {'end to end':>11} {'vs image run':>13}")
    for name, times in boots.items():
        up = statistics.median(u for u, _ in times)
        end = statistics.median(e for _, e in times)
        print(f"{name:<6} {up:>14.1f} s {end:>9.1f} s {up / image_up:>11.2f}x")
    print(f"image run to the end: {image_end:.1f} s; {runs} boots of each")


if __name__ == "__main__":
    main()
