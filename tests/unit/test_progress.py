import io
from pathlib import Path

import pytest

from bootc_box.progress import Progress, Style, choose_style, start_progress, summary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_summary_says_where_the_time_went() -> None:
    phases = {"pull": 0.2, "mount": 1.4, "boot files": 0.0, "boot": 31.2}
    assert summary(33.4, phases, "cold") == (
        "VM up in 33 s, cold (pull 0 s, mount 1 s, boot files 0 s, boot 31 s)"
    )


@pytest.mark.parametrize(
    ("terminal", "console", "environ", "style"),
    [
        (True, False, {"TERM": "xterm-256color"}, Style.LIVE),
        (False, False, {"TERM": "xterm-256color"}, Style.PLAIN),
        # The guest's console shares the terminal; a live line would be torn.
        (True, True, {"TERM": "xterm"}, Style.PLAIN),
        (True, False, {"TERM": "dumb"}, Style.PLAIN),
        (True, False, {}, Style.PLAIN),
        (False, False, {"GITHUB_ACTIONS": "true"}, Style.GITHUB),
    ],
)
def test_style_follows_the_terminal(
    terminal: bool, console: bool, environ: dict[str, str], style: Style
) -> None:
    assert choose_style(terminal, console, environ) is style


def test_plain_phases_end_with_a_timestamped_line_each() -> None:
    clock, err = Clock(), io.StringIO()
    progress = Progress(Style.PLAIN, err, clock)
    progress.begin("pull")
    clock.now += 2.0
    progress.begin("boot")
    clock.now += 30.0
    progress.begin("boot files")  # a second attempt adds to the phases it repeats
    progress.begin("boot")
    clock.now += 1.0
    assert progress.done("cold") == "VM up in 33 s, cold (pull 2 s, boot 31 s, boot files 0 s)"
    lines = err.getvalue().splitlines()
    assert [line.split()[2:] for line in lines] == [
        ["pull", "2.0", "s"], ["boot", "30", "s"], ["boot", "files", "0.0", "s"],
        ["boot", "1.0", "s"],
    ]  # fmt: skip
    assert all(line.startswith("bootc-box: ") and line[13] == ":" for line in lines)


def test_github_actions_folds_the_boot_into_a_group() -> None:
    clock, err = Clock(), io.StringIO()
    progress = Progress(Style.GITHUB, err, clock)
    progress.begin("mount")
    progress.begin("boot")
    progress.done("cold")
    lines = err.getvalue().splitlines()
    assert lines[1] == "::group::bootc-box: boot"
    assert lines[3] == "::endgroup::"
    assert len(lines) == 4


def test_a_failed_run_closes_the_group_without_a_phase_line() -> None:
    err = io.StringIO()
    progress = Progress(Style.GITHUB, err, Clock())
    progress.begin("boot")
    progress.abandon()
    assert err.getvalue().splitlines() == ["::group::bootc-box: boot", "::endgroup::"]


def test_live_lines_end_as_plain_lines_with_their_time() -> None:
    clock, err = Clock(), io.StringIO()
    progress = Progress(Style.LIVE, err, clock)
    progress.begin("boot", lambda: "\x1b[0;32m  OK  \x1b[0m] Started sshd")
    clock.now += 12.3
    progress.done("cold")
    assert "bootc-box: boot 12 s\n" in err.getvalue()


def test_the_summary_also_goes_where_the_caller_asked(tmp_path: Path) -> None:
    """A caller that shares bootc-box's stderr with the guest (the Action)
    cannot tell bootc-box's summary line from one the guest prints."""
    clock, err = Clock(), io.StringIO()
    progress = Progress(Style.PLAIN, err, clock, summary_file=tmp_path / "summary")
    progress.begin("boot")
    clock.now += 31.0
    line = progress.done("cold")
    assert (tmp_path / "summary").read_text() == f"{line}\n"


def test_the_summary_file_is_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTC_BOX_SUMMARY_FILE", str(tmp_path / "summary"))
    with start_progress(console_shown=False) as progress:
        assert progress.summary_file == tmp_path / "summary"
    monkeypatch.delenv("BOOTC_BOX_SUMMARY_FILE")
    with start_progress(console_shown=False) as progress:
        assert progress.summary_file is None
