#!/usr/bin/env python3
"""What Secure Boot and a TPM cost a disk boot: the installable fixture
(which ships Debian's signed boot chain) installed once with to-disk, then
`podman run ... BOX run --disk DISK --transient ... -- true` with plain
UEFI (the baseline: the same disk, shim and systemd-boot starting
unchecked), with --firmware uefi-secure (OVMF's SMM build, every loader and
the kernel checked), and with --tpm too (swtpm started, the firmware and
shim measuring into it). Medians of RUNS runs of each, split into
bootc-box's phases as bench/phases.py splits them, and each total as a
ratio to the baseline.
Usage: bench/secure_boot.py [RUNS] [--json FILE]   (default 3 runs of each)"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phases import medians, run_phases
from warm_start import BOX, HOST_STORE

INSTALLABLE = "localhost/bootc-box-installable:latest"
CASES = {
    "uefi": ("--firmware", "uefi"),
    "uefi-secure": ("--firmware", "uefi-secure"),
    "uefi-secure --tpm": ("--firmware", "uefi-secure", "--tpm"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    volume = f"bootc-box-bench-{time.monotonic_ns()}"
    subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            disk = Path(tmp) / "disk.raw"
            mount = ("-v", f"{tmp}:{tmp}")
            subprocess.run(
                ["podman", "run", "--rm", "--device", "/dev/kvm", "-v", HOST_STORE,
                 "-v", f"{volume}:/cache", *mount, BOX, "to-disk", INSTALLABLE, str(disk)],
                check=True, capture_output=True,
            )  # fmt: skip
            for name, options in CASES.items():
                runs = [
                    run_phases(volume, "--disk", str(disk), "--transient", *options,
                               box_options=mount)
                    for _ in range(args.runs)
                ]  # fmt: skip
                results[name] = medians(runs)
                print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in results[name].items()),
                      file=sys.stderr)  # fmt: skip
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", volume], check=True, capture_output=True)
    baseline = sum(results["uefi"].values())
    for name, phases in results.items():
        total = sum(phases.values())
        print(f"{name:<18} {total:6.1f} s  {total / baseline:5.2f}x plain UEFI")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "phases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
