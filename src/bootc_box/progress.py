"""Where a run is, and where its time went: one phase at a time (pull, mount,
boot files, boot or restore, save), each ending with its duration, and a
summary line once the VM is up.

On a terminal each phase is one live status line (rich) that ends as a line
with the phase's time; the boot's line shows the guest console's last line.
Anywhere else (a pipe, a log file, a detached supervisor, a run that shows
the guest's console) each phase ends with a plain timestamped line, and under
GitHub Actions the boot is folded into a ::group::."""

import enum
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from bootc_box.terminal import printable

log = logging.getLogger(__name__)

# Phases the GitHub Actions log folds: the guest's boot, long and noisy.
FOLDED = ("boot", "restore")

# Where bootc-box also writes its summary line, for a program that runs it
# and cannot tell that line on stderr from one the guest prints there (the
# GitHub Action).
SUMMARY_FILE_VARIABLE = "BOOTC_BOX_SUMMARY_FILE"


class Style(enum.Enum):
    LIVE = "live"  # a terminal nothing else writes to
    PLAIN = "plain"
    GITHUB = "github"  # plain, with the boot in a ::group::


def choose_style(terminal: bool, console_shown: bool, environ: dict[str, str]) -> Style:
    if environ.get("GITHUB_ACTIONS") == "true":
        return Style.GITHUB
    # The guest's console goes to the same terminal: a live line would be
    # torn by it, and TERM=dumb cannot redraw one.
    if terminal and not console_shown and environ.get("TERM", "dumb") != "dumb":
        return Style.LIVE
    return Style.PLAIN


def seconds(duration: float) -> str:
    return f"{duration:.0f} s" if duration >= 10 else f"{duration:.1f} s"


def summary(total: float, phases: dict[str, float], how: str) -> str:
    """`VM up in 33 s, cold (pull 0 s, mount 1 s, boot files 0 s, boot 31 s)`."""
    spent = ", ".join(f"{name} {duration:.0f} s" for name, duration in phases.items())
    return f"VM up in {total:.0f} s, {how} ({spent})"


@dataclass
class _Current:
    name: str
    began: float
    detail: Callable[[], str] | None
    live: Live | None = None


@dataclass
class Progress:
    """The phases of one run, as `begin(name)` calls: each ends the last."""

    style: Style
    err: TextIO
    clock: Callable[[], float] = time.monotonic
    summary_file: Path | None = None
    began: float = field(default=0.0)
    phases: dict[str, float] = field(default_factory=dict)
    current: _Current | None = None

    def __post_init__(self) -> None:
        self.began = self.clock()

    def begin(self, name: str, detail: Callable[[], str] | None = None) -> None:
        """Start phase `name`; `detail` gives a live line's changing text."""
        self._end()
        current = self.current = _Current(name, self.clock(), detail)
        if self.style is Style.GITHUB and name in FOLDED:
            print(f"::group::bootc-box: {name}", file=self.err, flush=True)
        if self.style is Style.LIVE:
            console = Console(file=self.err, highlight=False)
            current.live = Live(
                get_renderable=lambda: self._status_line(current),
                console=console,
                refresh_per_second=4,
                transient=True,
                # Log lines written meanwhile go above the status line.
                redirect_stderr=self.err is sys.stderr,
                redirect_stdout=False,
            )
            # Ctrl-C inside start() would leave rich half started, and its
            # stop() then fails (IndexError: pop from empty list, seen once
            # in ~30 Ctrl-C tests): SIGINT and SIGTERM wait until it is done.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                current.live.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _status_line(self, current: _Current) -> Spinner:
        text = Text(f"{current.name} {seconds(self.clock() - current.began)}", style="bold")
        if current.detail is not None:
            last = printable(current.detail()).strip()
            width = max(0, Console(file=self.err).width - len(text) - 6)
            if last and width:
                text.append("  " + last[:width], style="dim")
        return Spinner("dots", text)

    def _end(self, completed: bool = True) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        took = self.clock() - current.began
        self.phases[current.name] = self.phases.get(current.name, 0.0) + took
        if current.live is not None:
            current.live.stop()
        if not completed:
            return
        # A live line was on screen while the phase ran; plain lines say when.
        stamp = "" if self.style is Style.LIVE else datetime.now().strftime("%H:%M:%S ")
        print(f"bootc-box: {stamp}{current.name} {seconds(took)}", file=self.err, flush=True)
        if self.style is Style.GITHUB and current.name in FOLDED:
            print("::endgroup::", file=self.err, flush=True)

    def done(self, how: str) -> str:
        """End the last phase; the summary line of all of them, saying `how`
        the VM came up (cold, restored), also in `summary_file` if asked.
        (Written in place: the Action mounts that one file into the box.)"""
        self._end()
        line = summary(self.clock() - self.began, self.phases, how)
        if self.summary_file is not None:
            try:
                self.summary_file.write_text(f"{line}\n")
            except OSError as e:
                log.warning("could not write the summary to %s: %s", self.summary_file, e)
        return line

    def abandon(self) -> None:
        """The run failed or was stopped: take a live line off the screen."""
        current = self.current
        self._end(completed=False)
        if self.style is Style.GITHUB and current is not None and current.name in FOLDED:
            print("::endgroup::", file=self.err, flush=True)


@contextmanager
def start_progress(console_shown: bool) -> Iterator[Progress]:
    """The run's progress on stderr, whatever phase was live taken down when
    the run ends."""
    err = sys.stderr
    style = choose_style(err.isatty(), console_shown, dict(os.environ))
    summary_file = os.environ.get(SUMMARY_FILE_VARIABLE)
    progress = Progress(style, err, summary_file=Path(summary_file) if summary_file else None)
    try:
        yield progress
    finally:
        progress.abandon()
