"""The little of QEMU's monitor protocol we need: press the power button,
save and load the VM's state.

QEMU's own client (qemu.qmp) is not packaged by Debian, and the box image is
built from Debian packages only, so that it can be built with no index but
Debian's; three JSON messages over a socket do not need it."""

import json
import socket
from pathlib import Path
from typing import Any

from bootc_box.errors import BootcBoxError


def _reply(stream: Any) -> dict[str, Any]:
    """The next message that is not an asynchronous event."""
    while True:
        line = stream.readline()
        if not line:
            raise BootcBoxError("QEMU closed its monitor socket")
        message: dict[str, Any] = json.loads(line)
        if "event" not in message:
            if "error" in message:
                raise BootcBoxError(f"QEMU refused a command: {message['error'].get('desc')}")
            return message


def qmp_message(command: str, arguments: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message).encode() + b"\n"


def qmp_execute(
    qmp_socket: Path, command: str, timeout: float, arguments: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one QMP command on a fresh connection and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(qmp_socket))
        with conn.makefile("rwb") as stream:
            _reply(stream)  # the greeting
            for message in (qmp_message("qmp_capabilities"), qmp_message(command, arguments)):
                stream.write(message)
                stream.flush()
                reply = _reply(stream)
            return reply
