#!/usr/bin/python3
"""The benchmarks' results as people look at them: reads bench/scaling.py's
JSON (and bench/phases.py's) and writes docs/performance.md (tables, with
the machine and date they were measured on) and docs/performance.png (the
phases of a cold, a restored and a disk boot as stacked bars; runs at once
against the time each takes, warm and cold; to-disk time against image
size). matplotlib (Debian's python3-matplotlib) is for this report only,
never for the box.

Usage: bench/report.py SCALING.json [--phases PHASES.json] [--docs DIR]
(default DIR: docs/ of this checkout)"""

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display: a file
import matplotlib.pyplot as plt

Rows = dict[str, dict[str, float]]


# bootc-box's phases in the order a run goes through them, then the rest.
ORDER = (
    "pull",
    "mount",
    "boot files",
    "boot",
    "restore",
    "save",
    "ssh",
    "command and exit",
    "podman",
)


def phase_names(phases: dict[str, dict[str, float]]) -> list[str]:
    seen = dict.fromkeys(name for run in phases.values() for name in run)
    return [n for n in ORDER if n in seen] + [n for n in seen if n not in ORDER]


def phases_table(phases: dict[str, dict[str, float]]) -> list[str]:
    names = phase_names(phases)
    # The baseline is the cold run; a result without one (a smoke run of
    # some cases) is a ratio to its first.
    base = "cold" if "cold" in phases else next(iter(phases))
    cold = sum(phases[base].values())
    lines = [
        "## Where a run's time goes (`run ... -- true`, medians)",
        "",
        "| run | " + " | ".join(names) + f" | total | vs {base} |",
        "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: |",
    ]
    for kind, run in phases.items():
        total = sum(run.values())
        cells = " | ".join(f"{run.get(name, 0.0):.1f} s" for name in names)
        lines.append(f"| {kind} | {cells} | {total:.1f} s | {total / cold:.2f}x |")
    return [*lines, ""]


def markdown(results: dict[str, object], phases: dict[str, dict[str, float]] | None) -> str:
    lines = [
        "# Performance",
        "",
        f"Measured on {results['machine']}, {results['date']}, under TCG, with"
        " `bench/scaling.py`"
        + (" and `bench/phases.py`" if phases else "")
        + "; `bench/report.py` wrote this page and the chart.",
        "",
        "![Runs at once, and to-disk against image size](performance.png)",
        "",
        *(phases_table(phases) if phases else []),
        "## Runs of the fixture started at once on one cache volume",
        "",
        "| runs at once | kind | wall time | each run (mean) | slowest run | each vs one alone |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("warm", "cold"):
        rows = rows_of(results, kind)
        one = rows["1"]["mean"]
        for n, row in rows.items():
            lines.append(
                f"| {n} | {kind} | {row['wall']:.1f} s | {row['mean']:.1f} s"
                f" | {row['max']:.1f} s | {row['mean'] / one:.2f}x |"
            )
    to_disk = rows_of(results, "to_disk")
    base = to_disk["fixture"]["seconds"]
    lines += [
        "",
        "## to-disk against image size (each an install, no cache)",
        "",
        "| image | size | to-disk | vs the fixture |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in to_disk.items():
        lines.append(
            f"| {name} | {row['image_mib']:.0f} MiB | {row['seconds']:.1f} s"
            f" | {row['seconds'] / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def rows_of(results: dict[str, object], key: str) -> Rows:
    rows = results[key]
    assert isinstance(rows, dict), f"{key} is not a table"
    return {str(k): v for k, v in rows.items()}


def stacked_phases(axes: "matplotlib.axes.Axes", phases: dict[str, dict[str, float]]) -> None:
    names = phase_names(phases)
    kinds = list(phases)
    bottoms = [0.0] * len(kinds)
    for name in names:
        values = [phases[kind].get(name, 0.0) for kind in kinds]
        axes.bar(kinds, values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set(ylabel="seconds", title="Where a run's time goes")
    axes.legend(fontsize="small")


def chart(
    results: dict[str, object], phases: dict[str, dict[str, float]] | None, png: Path
) -> None:
    if phases:
        figure, (steps, runs, disks) = plt.subplots(1, 3, figsize=(15, 4.2))
        stacked_phases(steps, phases)
    else:
        figure, (runs, disks) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, style in (("warm", "o-"), ("cold", "s-")):
        rows = rows_of(results, kind)
        counts = [int(n) for n in rows]
        runs.plot(counts, [r["mean"] for r in rows.values()], style, label=f"{kind}: each run")
        runs.plot(counts, [r["wall"] for r in rows.values()], style, alpha=0.4,
                  label=f"{kind}: all of them (wall)")  # fmt: skip
    runs.set(xlabel="runs started at once", ylabel="seconds", xscale="log", title="Runs at once")
    runs.set_xticks(counts, [str(n) for n in counts])
    runs.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    runs.legend(fontsize="small")
    to_disk = rows_of(results, "to_disk")
    labels = [f"{n}\n{r['image_mib']:.0f} MiB" for n, r in to_disk.items()]
    seconds = [r["seconds"] for r in to_disk.values()]
    disks.bar(labels, seconds, color=["tab:blue", "tab:orange"])
    disks.set(ylabel="seconds", title="to-disk against image size")
    figure.suptitle(f"bootc-box, TCG, {results['machine']}, {results['date']}", fontsize="small")
    figure.tight_layout()
    figure.savefig(png, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scaling", type=Path)
    parser.add_argument("--phases", type=Path)
    parser.add_argument("--docs", type=Path, default=Path(__file__).parents[1] / "docs")
    args = parser.parse_args()
    results = json.loads(args.scaling.read_text())
    phases = json.loads(args.phases.read_text())["phases"] if args.phases else None
    docs = args.docs
    (docs / "performance.md").write_text(markdown(results, phases))
    chart(results, phases, docs / "performance.png")
    print(f"wrote {docs / 'performance.md'} and {docs / 'performance.png'}")


if __name__ == "__main__":
    main()
