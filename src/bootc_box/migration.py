"""Saving a running VM's state to a file, and loading it into a new QEMU.

This is QEMU's migration to a file, in its mapped-ram layout: every RAM page
has a fixed place in the file, so untouched memory stays a hole (a 2 GiB
guest saves into ~250 MB on disk) and one file can be loaded by several
QEMUs at once. virtiofsd's state travels inside QEMU's (QEMU asks it over
vhost-user), so the new QEMU needs a new virtiofsd serving the same tree."""

import subprocess
import time
from pathlib import Path
from typing import Any

from bootc_box.errors import BootcBoxError
from bootc_box.qmp import qmp_execute

MAPPED_RAM = {"capabilities": [{"capability": "mapped-ram", "state": True}]}
QMP_TIMEOUT = 30.0


def file_uri(path: Path) -> dict[str, Any]:
    return {"uri": f"file:{path}"}


def migration_done(reply: dict[str, Any]) -> bool:
    """Whether a `query-migrate` reply says the migration completed; raises
    when it failed."""
    info = reply.get("return", {})
    status = info.get("status")
    if status in ("failed", "cancelled"):
        reason = info.get("error-desc", "no reason given")
        raise BootcBoxError(f"QEMU's migration {status}: {reason}")
    return bool(status == "completed")


def wait_for_migration(qmp_socket: Path, vm: "subprocess.Popen[bytes]", timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not migration_done(qmp_execute(qmp_socket, "query-migrate", QMP_TIMEOUT)):
        if vm.poll() is not None:
            raise BootcBoxError(f"QEMU exited with status {vm.returncode} while migrating")
        if time.monotonic() > deadline:
            raise BootcBoxError(f"QEMU's migration did not finish within {timeout:.0f} s")
        time.sleep(0.05)


def save_state(
    qmp_socket: Path, vm: "subprocess.Popen[bytes]", state: Path, timeout: float = 300.0
) -> None:
    """Pause the VM, write its state to `state`, and let it run on."""
    qmp_execute(qmp_socket, "stop", QMP_TIMEOUT)
    try:
        qmp_execute(qmp_socket, "migrate-set-capabilities", QMP_TIMEOUT, MAPPED_RAM)
        qmp_execute(qmp_socket, "migrate", QMP_TIMEOUT, file_uri(state))
        wait_for_migration(qmp_socket, vm, timeout)
    finally:
        if vm.poll() is None:
            qmp_execute(qmp_socket, "cont", QMP_TIMEOUT)


def load_state(
    qmp_socket: Path, vm: "subprocess.Popen[bytes]", state: Path, timeout: float = 120.0
) -> None:
    """Load `state` into a QEMU started with `-incoming defer`, and run it."""
    qmp_execute(qmp_socket, "migrate-set-capabilities", QMP_TIMEOUT, MAPPED_RAM)
    qmp_execute(qmp_socket, "migrate-incoming", QMP_TIMEOUT, file_uri(state))
    wait_for_migration(qmp_socket, vm, timeout)
    qmp_execute(qmp_socket, "cont", QMP_TIMEOUT)
