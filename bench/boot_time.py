#!/usr/bin/env python3
"""Time from `podman run` to the guest's first output line: bootc-box against
bare QEMU + virtiofsd with the same kernel, image and binaries, measured in
the same run and reported as a ratio. With --images, also the fixture as a
UKI-only image without sshd (tests/fixtures/uki: its kernel cut out of the
UKI, the command run over virtio-serial), against the same baseline.
Usage: bench/boot_time.py [RUNS] [--images]"""

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
UKI = "localhost/bootc-box-uki:latest"
DEADLINE = 600.0
COMMON = ["podman", "run", "--rm", "--privileged", "--device", "/dev/kvm",
          "-v", "/var/lib/containers/storage:/var/lib/containers/host-storage:ro"]  # fmt: skip


def case_argv(name: str, out: Path, run: int) -> list[str]:
    """The podman run line of one case; the guest console is kept in `out`."""
    console = f"/out/{name}-{run}.console"
    if name == "bare qemu":
        return [
            *COMMON,
            "-v",
            f"{BENCH}:/bench:ro",
            "-v",
            f"{out}:/out",
            "-e",
            f"CONSOLE_LOG={console}",
            "--entrypoint",
            "/bench/bare-boot",
            BOX,
            FIXTURE,
        ]
    image = UKI if name == "uki, serial" else FIXTURE
    # No volume: every run boots cold, and saves nothing.
    return [*COMMON, "-v", f"{out}:/out", BOX, "run", "--console", image, "--", "echo", "ready"]


def time_to_output(argv: list[str], stderr: Path) -> tuple[float, float] | None:
    """Seconds until the guest printed "ready" and until the run ended; None
    when it did not print it before the deadline."""
    started = time.monotonic()
    with (
        stderr.open("wb") as err,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err) as proc,
    ):
        assert proc.stdout is not None
        timer = threading.Timer(DEADLINE, proc.kill)
        timer.start()
        try:
            ready = next(
                (time.monotonic() - started for line in proc.stdout if line.strip() == b"ready"),
                None,
            )
        finally:
            timer.cancel()
        proc.wait()
    return None if ready is None else (ready, time.monotonic() - started)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--images"]
    runs = int(args[0]) if args else 3
    out = Path(tempfile.mkdtemp(prefix="bootc-box-bench-"))
    cases = ["bare qemu", "bootc-box", *(["uki, serial"] * ("--images" in sys.argv))]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for run in range(1, runs + 1):
        for name, times in results.items():  # interleaved, so drift hits both alike
            result = time_to_output(case_argv(name, out, run), out / f"{name}-{run}.stderr")
            print(f"run {run} {name}: {f'{result[0]:.1f} s' if result else 'NO OUTPUT'}",
                  file=sys.stderr)  # fmt: skip
            if result:
                times.append(result)
    print(f"consoles and logs: {out}", file=sys.stderr)
    if not results["bare qemu"]:
        raise SystemExit("the baseline never booted; see the consoles")
    base = statistics.median(r[0] for r in results["bare qemu"])
    print(f"{'case':<12} {'booted':>6} {'to output (median)':>19} {'to exit':>8} {'ratio':>6}")
    for name, times in results.items():
        if not times:
            print(f"{name:<12} {0:>3}/{runs}")
            continue
        ready = statistics.median(r[0] for r in times)
        ended = statistics.median(r[1] for r in times)
        print(f"{name:<12} {len(times):>4}/{runs} {ready:>17.1f} s {ended:>6.1f} s "
              f"{ready / base:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
