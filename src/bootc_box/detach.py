"""`run -d`: hand the VM to a supervisor daemon (python-daemon) and return
once it has the image mounted and QEMU booting, or has failed."""

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import daemon

from bootc_box.console import LogReader
from bootc_box.errors import EXIT_TOOL_FAILED, BootcBoxError
from bootc_box.signals import Terminated, on_sigterm
from bootc_box.terminal import PrintableWriter
from bootc_box.vms import RunRecord, VmState, current_state, read_record, supervisor_alive

log = logging.getLogger(__name__)

SUPERVISOR_LOG = "supervisor.log"
START_TIMEOUT = 1800.0  # a first pull of a large image over a slow link


def start_detached(directory: Path, supervise: Callable[[], int]) -> int:
    """Fork the supervisor, then follow its log until the VM boots or fails.
    A failed start leaves nothing behind, as a failed foreground run."""
    log_path = directory / SUPERVISOR_LOG
    log_path.touch(mode=0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        _become_supervisor(directory, supervise)
    os.waitpid(child, 0)  # python-daemon's first fork exits at once
    state = _follow_start(directory, log_path)
    if state is VmState.STARTING:  # still pulling after START_TIMEOUT: let it go on
        log.warning(
            "%s is still starting; follow it with bootc-box logs -f %s",
            directory.name,
            directory.name,
        )
    if state in (VmState.STARTING, VmState.BOOTING, VmState.RUNNING):
        print(directory.name)
        return 0
    record = read_record(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if record is not None and record.state is VmState.FAILED:
        return EXIT_TOOL_FAILED  # the supervisor's log, echoed above, said why
    raise BootcBoxError(
        f"the supervisor of {directory.name} stopped while starting ({state.value})",
        "rerun with --debug to see why",
    )


def _become_supervisor(directory: Path, supervise: Callable[[], int]) -> None:
    status = EXIT_TOOL_FAILED
    try:
        with (
            (directory / SUPERVISOR_LOG).open("ab") as out,
            daemon.DaemonContext(
                # python-daemon would not fork when stdin is a socket (as
                # under inetd), and the parent would wait for the whole VM.
                detach_process=True,
                working_directory="/",
                umask=0o022,
                stdout=out,
                stderr=out,
                signal_map={signal.SIGTERM: on_sigterm, signal.SIGHUP: signal.SIG_IGN},
            ),
        ):
            try:
                status = supervise()
            except BootcBoxError as e:
                # The one rendering of the error: `run -d` echoes this log
                # while the VM starts, and `logs` shows it later.
                log.error("error: %s", e)
            except (Terminated, KeyboardInterrupt):
                status = 143
            except BaseException:
                log.exception("the supervisor failed")
    finally:
        os._exit(status)


def _follow_start(directory: Path, log_path: Path) -> VmState:
    """Copy the supervisor's messages (and the guest's console, which it
    follows) to our stderr while it starts."""
    started = time.monotonic()
    shown = PrintableWriter(sys.stderr.buffer)
    # The supervisor's log is rotated while the VM boots (a console that
    # says much): read on across a rotation.
    messages = LogReader(log_path)
    with contextlib.closing(messages):
        while True:
            shown.write(messages.read())
            record = read_record(directory)
            waited = time.monotonic() - started
            if record is None:
                # The supervisor writes its record first thing.
                state = VmState.STARTING if waited < 30 else VmState.DEAD
            else:
                state = current_state(record)
            if state is not VmState.STARTING or waited > START_TIMEOUT:
                if record is not None and not state.live:
                    # It says why after marking the record: its log is whole
                    # only once it has exited.
                    _wait_for_exit(record, timeout=30)
                shown.write(messages.read())
                shown.finish()
                return state
            time.sleep(0.2)


def _wait_for_exit(record: RunRecord, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while supervisor_alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
