"""SIGTERM (`podman stop`, `bootc-box stop`) as an exception, so that every
resource a command holds unwinds in order."""

import signal
from types import FrameType


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second signal must not interrupt the clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def raise_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
