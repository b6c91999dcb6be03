#!/usr/bin/python3
"""The benchmarks' results as people look at them: reads bench/scaling.py's
JSON and writes docs/performance.md (tables, with the machine and date they
were measured on) and docs/performance.png (runs at once against the time
each takes, warm and cold; to-disk time against image size). matplotlib
(Debian's python3-matplotlib) is for this report only, never for the box.

Usage: bench/report.py SCALING.json [DOCS_DIR]   (default: docs/ of this checkout)"""

import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display: a file
import matplotlib.pyplot as plt

Rows = dict[str, dict[str, float]]


def markdown(results: dict[str, object]) -> str:
    lines = [
        "# Performance",
        "",
        f"Measured on {results['machine']}, {results['date']}, under TCG, with"
        " `bench/scaling.py`; `bench/report.py` wrote this page and the chart.",
        "",
        "![Runs at once, and to-disk against image size](performance.png)",
        "",
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


def chart(results: dict[str, object], png: Path) -> None:
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
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    results = json.loads(Path(sys.argv[1]).read_text())
    docs = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).parents[1] / "docs"
    (docs / "performance.md").write_text(markdown(results))
    chart(results, docs / "performance.png")
    print(f"wrote {docs / 'performance.md'} and {docs / 'performance.png'}")


if __name__ == "__main__":
    main()
