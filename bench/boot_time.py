#!/usr/bin/env python3
"""Time from `podman run` to the guest's first output line: bootc-box against
bare QEMU + virtiofsd with the same kernel, image and binaries, measured in
the same run and reported as a ratio. Usage: bench/boot_time.py [RUNS]"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
COMMON = ["podman", "run", "--rm", "--privileged", "--device", "/dev/kvm",
          "-v", "/var/lib/containers/storage:/var/lib/containers/host-storage:ro"]  # fmt: skip

CASES = {
    "bare qemu": [
        *COMMON,
        "-v",
        f"{BENCH}:/bench:ro",
        "--entrypoint",
        "/bench/bare-boot",
        BOX,
        FIXTURE,
    ],
    "bootc-box": [*COMMON, BOX, "run", FIXTURE, "--", "echo", "ready"],
}


def time_to_output(argv: list[str]) -> tuple[float, float]:
    """Seconds until the guest printed "ready", and until the run had ended."""
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == b"ready":
                ready = time.monotonic() - started
                break
        else:
            raise SystemExit(f"no output from {argv}")
    return ready, time.monotonic() - started


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for i in range(runs):
        for name, argv in CASES.items():  # interleaved, so drift hits both alike
            results[name].append(time_to_output(argv))
            print(f"run {i + 1} {name}: {results[name][-1][0]:.1f} s", file=sys.stderr)
    base = statistics.median(r[0] for r in results["bare qemu"])
    print(f"{'case':<10} {'to output (median)':>19} {'to exit (median)':>17} {'ratio':>6}")
    for name, times in results.items():
        ready = statistics.median(r[0] for r in times)
        ended = statistics.median(r[1] for r in times)
        print(f"{name:<10} {ready:>17.1f} s {ended:>15.1f} s {ready / base:>6.2f}")


if __name__ == "__main__":
    main()
