"""What of the guest's output may reach the user's terminal. The guest writes
its console, and a terminal acts on the control characters in what it is
given: escape sequences clear it, move its cursor, set its title, or ask it
questions whose answers it types into our input. So whatever the guest
wrote is shown as text (`logs`, `--console`, `run -d`, the line quoted in
an error): decoded as UTF-8, what is not UTF-8 shown as U+FFFD, escape
sequences dropped whole, and every other C0 and C1 control but newline
and tab dropped."""

import codecs
import os
import re
import stat
from typing import BinaryIO

# Dropped whole, so that their parameters do not show as text: CSI (ESC [,
# or its C1 form), strings up to their terminator (OSC, DCS, SOS, PM, APC),
# and ESC with intermediates and a final byte (ESC ( B, ESC c).
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*"
_STRING = r"(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*"
_ESCAPE = r"\x1b[ -/]*"
_CONTROLS = re.compile(
    rf"{_CSI}[@-~]|{_STRING}(?:\x07|\x1b\\|\x9c)|{_ESCAPE}[0-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
# The start of a sequence that what follows may complete.
_UNFINISHED = re.compile(rf"(?:{_CSI}|{_STRING}\x1b?|{_ESCAPE})\Z")
# How much of an unfinished sequence is held back for the next write; a
# longer one is let go, its text shown.
HOLD = 4096


def printable(text: str) -> str:
    """`text` without anything that would make a terminal do something."""
    return _CONTROLS.sub("", text)


class PrintableWriter:
    """Writes guest bytes to `out` as printable text, as they come: a UTF-8
    character or an escape sequence cut in two by a read is still one."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def write(self, data: bytes) -> None:
        text = self._held + self._decoder.decode(data)
        unfinished = _UNFINISHED.search(text, max(0, len(text) - HOLD))
        cut = unfinished.start() if unfinished else len(text)
        self._held = text[cut:]
        self._put(text[:cut])

    def finish(self) -> None:
        """Write what was held back for a write that will not come."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        self._put(text)

    def _put(self, text: str) -> None:
        self.out.write(printable(text).encode())
        self.out.flush()


def stdin_is_null() -> bool:
    """Whether our stdin is /dev/null, or closed: what `podman run` without
    -i gives the box. Nothing a command could read comes from it."""
    try:
        ours, null = os.fstat(0), os.stat(os.devnull)
    except OSError:  # fd 0 closed
        return True
    return stat.S_ISCHR(ours.st_mode) and ours.st_rdev == null.st_rdev
