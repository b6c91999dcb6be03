#!/usr/bin/env python3
"""How cost grows, measured in one run:
- N runs of the fixture (`podman run ... BOX run FIXTURE -- true`) started
  at once on one cache volume, N = 1, 2, 4 ... MAX, warm (restored from the
  state the first run saved) and cold (--warm never): the wall time until
  all have ended and each run's own time, as a ratio to one run alone (the
  baseline, N = 1), so users see what a CI runner with N parallel jobs gets;
- to-disk of the installable fixture and of the same image with EXTRA more
  bytes of files, each on a fresh volume (an install, not a cache hit): time
  against image size, as a ratio to the smaller image's.
Writes the numbers as JSON to --json FILE too (bench/report reads them).
Usage: bench/scaling.py [MAX] [--extra SIZE] [--json FILE]   (defaults 8, 1G)"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from warm_start import timed_run

INSTALLABLE = "localhost/bootc-box-installable:latest"
BIG = "localhost/bootc-box-installable-big:bench"


def counts(limit: int) -> list[int]:
    """1, 2, 4 ... up to `limit` (and `limit` itself)."""
    found = [1]
    while found[-1] * 2 <= limit:
        found.append(found[-1] * 2)
    return found if found[-1] == limit else [*found, limit]


def at_once(volume: str, n: int, *options: str) -> dict[str, float]:
    """N runs started together: the wall time, and each run's own."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        runs = list(pool.map(lambda _: timed_run(volume, *options), range(n)))
    wall = time.monotonic() - started
    ends = [end for _, end, _ in runs]
    kinds = {kind for _, _, kind in runs}
    expected = {"cold"} if options else {"restored"}
    if kinds != expected:
        raise SystemExit(f"{n} runs started {kinds}, not {expected}")
    return {"wall": wall, "mean": statistics.mean(ends), "max": max(ends)}


def new_volume() -> str:
    name = f"bootc-box-bench-{time.monotonic_ns()}"
    subprocess.run(["podman", "volume", "create", name], check=True, capture_output=True)
    return name


def drop_volume(name: str) -> None:
    subprocess.run(["podman", "volume", "rm", "-f", name], check=True, capture_output=True)


def image_mib(image: str) -> float:
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(size) / 2**20


def build_big(extra: str) -> None:
    """The installable fixture with EXTRA bytes more of files (random, so
    that nothing on the way compresses them away)."""
    with tempfile.TemporaryDirectory(prefix="bootc-box-bench-") as tmp:
        Path(tmp, "Containerfile").write_text(
            f"FROM {INSTALLABLE}\n"
            f"RUN head -c {extra} /dev/urandom > /usr/share/bootc-box-bench-extra\n"
        )
        subprocess.run(["podman", "build", "-q", "-t", BIG, tmp], check=True, capture_output=True)


def to_disk_seconds(image: str) -> float:
    volume = new_volume()
    try:
        with tempfile.TemporaryDirectory(prefix="bootc-box-bench-", dir="/var/tmp") as tmp:
            _, end, _ = timed_run(
                volume, target=(image, f"{tmp}/disk.raw"), command="to-disk",
                box_options=("-v", f"{tmp}:{tmp}"),
            )  # fmt: skip
        return end
    finally:
        drop_volume(volume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("max", nargs="?", type=int, default=8)
    parser.add_argument("--extra", default="1G", help="bytes more in the bigger image")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()},"
        f" {len(os.sched_getaffinity(0))} CPUs",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    scaling: dict[str, dict[int, dict[str, float]]] = {}
    volume = new_volume()
    try:
        _, first, kind = timed_run(volume, "--warm", "always")
        print(f"first run ({kind}, saves its state): {first:.1f} s", file=sys.stderr)
        for name, options in (("warm", ()), ("cold", ("--warm", "never"))):
            rows = {}
            for n in counts(args.max):
                rows[n] = at_once(volume, n, *options)
                print(f"{name} x{n}: wall {rows[n]['wall']:.1f} s, "
                      f"per run {rows[n]['mean']:.1f} s", file=sys.stderr)  # fmt: skip
            scaling[name] = rows
    finally:
        drop_volume(volume)
    build_big(args.extra)
    try:
        sizes = {"fixture": image_mib(INSTALLABLE), "bigger": image_mib(BIG)}
        installs = {"fixture": to_disk_seconds(INSTALLABLE), "bigger": to_disk_seconds(BIG)}
    finally:
        subprocess.run(["podman", "rmi", BIG], check=False, capture_output=True)
    results.update(scaling)
    results["to_disk"] = {k: {"image_mib": sizes[k], "seconds": installs[k]} for k in sizes}

    print(f"{'runs at once':<13} {'kind':<5} {'wall':>8} {'per run':>8} {'vs one':>7}")
    for name, rows in scaling.items():
        one = rows[1]["mean"]
        for n, row in rows.items():
            print(f"{n:<13} {name:<5} {row['wall']:>6.1f} s {row['mean']:>6.1f} s "
                  f"{row['mean'] / one:>6.2f}x")  # fmt: skip
    base = installs["fixture"]
    for key in ("fixture", "bigger"):
        print(f"to-disk {key:<8} {sizes[key]:>6.0f} MiB {installs[key]:>6.1f} s "
              f"{installs[key] / base:>5.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
