import io
import subprocess
import sys

import pytest

from bootc_box.terminal import PrintableWriter, printable
from tests.unit.guest import HOSTILE, SHOWN


def test_escape_sequences_and_controls_go_newlines_and_tabs_stay() -> None:
    assert printable(HOSTILE.decode(errors="replace")) == SHOWN


def test_what_a_live_status_line_would_get_from_a_guest() -> None:
    line = (
        "\x1b[!p\x1b]104\x07\x1b[?7h\x1b[6n\x1b[32766;32766H\x1b(B"
        "[\x1b[0;32m  OK  \x1b[0m] Started\x07x"
    )
    assert printable(line) == "[  OK  ] Startedx"


def shown(*writes: bytes) -> bytes:
    out = io.BytesIO()
    writer = PrintableWriter(out)
    for data in writes:
        writer.write(data)
    writer.finish()
    return out.getvalue()


def test_bytes_split_anywhere_between_writes_show_the_same() -> None:
    """A follower reads whatever QEMU has written so far: a UTF-8 character
    or an escape sequence may be cut in two."""
    for cut in range(len(HOSTILE) + 1):
        assert shown(HOSTILE[:cut], HOSTILE[cut:]) == SHOWN.encode(), cut
    assert shown(*(HOSTILE[i : i + 1] for i in range(len(HOSTILE)))) == SHOWN.encode()


def test_a_sequence_that_never_ends_shows_its_text_but_not_its_escape() -> None:
    assert shown(b"x\x1b]0;never ended") == b"x0;never ended"
    assert shown(b"x\x1b") == b"x"


@pytest.mark.parametrize(
    ("stdin", "null"),
    [(subprocess.DEVNULL, True), (subprocess.PIPE, False)],
    ids=["dev-null", "pipe"],
)
def test_stdin_is_null_only_when_it_is_dev_null(stdin: int, null: bool) -> None:
    """In a process of its own, as the box's: podman run without -i gives /dev/null."""
    script = "from bootc_box.terminal import stdin_is_null; print(stdin_is_null())"
    result = subprocess.run(
        [sys.executable, "-c", script], stdin=stdin, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == str(null)


def test_a_closed_stdin_is_null() -> None:
    script = (
        "import os; os.close(0)\n"
        "from bootc_box.terminal import stdin_is_null; print(stdin_is_null())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
