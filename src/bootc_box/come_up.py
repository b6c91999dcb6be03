"""From a started machine to a guest that answers: a saved state loaded,
or a cold boot waited for (and saved for later runs), then the guest given
its own identity when it began as a saved one's."""

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bootc_box.boot_failures import FailureWatch
from bootc_box.console import RebootWatch, StallWatch
from bootc_box.credentials import Login
from bootc_box.errors import BootcBoxError
from bootc_box.identity import HostKeys, give_own_identity
from bootc_box.machine import BootAgain, Machine
from bootc_box.migration import load_state, save_state
from bootc_box.processes import last_line, wait_until
from bootc_box.progress import Progress
from bootc_box.qmp import qmp_execute
from bootc_box.run_spec import RunSpec
from bootc_box.serial_exec import AGENT_WAIT, Session
from bootc_box.ssh import (
    Answer,
    FirstLogin,
    SshTarget,
    master_socket,
    public_key,
    server_speaks,
    ssh_ready,
)
from bootc_box.vms import VmEntry, VmState
from bootc_box.warm import Start

log = logging.getLogger(__name__)

# A restored guest answers SSH within seconds; one that does not in this
# long is not going to, and a cold boot is the way on.
RESTORE_TIMEOUT = 60.0
# Seconds a guest that began to reboot gets to reset its machine.
REBOOT_GRACE = 120.0
# A booting guest is asked this often whether its sshd speaks yet (a cheap
# connection), and how long each ask waits for its banner; only then does
# a login try, each of which costs a process and up to ConnectTimeout.
BANNER_INTERVAL = 0.25
BANNER_WAIT = 1.0


class RestoreFailed(BootAgain):
    """A saved state did not come up; the run boots cold instead."""


class GuestStalled(BootAgain):
    """The guest kernel reported CPUs that stopped running."""


@dataclass(frozen=True)
class Up:
    """A guest that answered: how the run logs in to it, and how to tell it
    answers again after it rebooted."""

    target: SshTarget
    again: Callable[[], bool]


def report_waiting(what: str, every: float = 15.0) -> Callable[[float], None]:
    """A tick callback that says `what` with the elapsed time now and then."""
    next_report = [every]

    def tick(elapsed: float) -> None:
        if elapsed >= next_report[0]:
            log.info("%s (%d s)", what, elapsed)
            next_report[0] += every

    return tick


def come_up(
    spec: RunSpec,
    start: Start,
    machine: Machine,
    host_keys: Callable[[], HostKeys] | None,
    *,
    key: Path,
    image_id: str,
    progress: Progress,
    connection: ExitStack | None = None,
    agent: Session | None = None,
) -> Up:
    """From a started QEMU to a guest that lets the run's `key` in: load
    the saved state, or wait for the boot and save it (as a state of
    `image_id`, with the `agent` unit waiting, if the guest has one); then
    give the guest its own identity if it began as a snapshot's. With
    `connection`, the login that does so stays open until that closes, and
    the target returned logs in through it."""
    if start.restore:
        restore(start, machine)
    target = SshTarget(
        "127.0.0.1", machine.spec.network.ssh_port, "root", start.login.key, start.login.host_key
    )
    if start.save:
        login = FirstLogin(target, machine.spec.console_log.with_name("known_hosts"))
        wait_for_guest(spec, start, machine, login)
        target = login.target
        assert target.host_key, "a login checked or learnt the saved guest's host key"
        # Saved either way: a state whose unit did not say it waits serves
        # logins, and its restored runs do not send their commands to it.
        ready = agent is not None and agent.said("ready", AGENT_WAIT)
        if agent is not None and not ready:
            log.warning(
                "bootc-box's unit in the guest did not say it was ready within %.0f s of SSH;"
                " runs restored from this state log in over SSH",
                AGENT_WAIT,
            )
        progress.begin("save")
        save_for_later(spec, image_id, start, machine, target.host_key, agent=ready)
    if host_keys is not None:
        progress.begin("ssh")
        run_key = public_key(key)
        keys: list[HostKeys] = []
        if connection is not None:
            control = connection.enter_context(master_socket())
            target = dataclasses.replace(target, control=control)

        def give_identity() -> bool:
            keys[:] = keys or [host_keys()]
            return give_own_identity(target, run_key, keys[0].tar)

        # A restored guest's first login is this one, with no probe before
        # it: each login costs most of a second under TCG.
        try:
            # After a save, the guest answered already: its boot is no news.
            saved = start.save is not None
            wait_for_guest(spec, start, machine, give_identity, answered_before=saved)
        except RestoreFailed:
            raise
        except BootcBoxError as e:
            # Also in the run that saved the state: the state is no good.
            raise RestoreFailed(e.message) from e
        log.debug("the guest has its own keys and time")
        # Each boot gives the guest the saved state's login again (its
        # firmware's credentials): after a reboot it gets this run's again.
        return Up(dataclasses.replace(target, key=key, host_key=keys[0].ed25519), give_identity)
    login = FirstLogin(target, machine.spec.console_log.with_name("known_hosts"))
    wait_for_guest(spec, start, machine, login)
    return Up(login.target, lambda: ssh_ready(login.target) is Answer.UP)


def come_back(spec: RunSpec, machine: Machine, up: Up) -> None:
    """Wait for a guest that rebooted to answer again, as it did first;
    only what its console says from now on tells of this boot."""
    wait_for_guest(spec, Start(Login(up.target.key, (), "")), machine, up.again, rebooted=True)


def restore(start: Start, machine: Machine) -> None:
    """Load the saved state into the machine's waiting QEMU."""
    assert start.restore is not None
    started = time.monotonic()
    try:
        load_state(machine.qmp_socket, machine.qemu, start.restore.state)
    except (BootcBoxError, OSError, ValueError) as e:
        # A QEMU that refused the state may be gone before it says why.
        reason = last_line(machine.qemu_log) or str(e)
        raise RestoreFailed(f"could not load the saved state ({reason})") from e
    start.loaded()
    log.debug("loaded the saved state in %.1f s", time.monotonic() - started)


def come_up_serial(
    spec: RunSpec,
    start: Start,
    machine: Machine,
    session: Session,
    *,
    image_id: str,
    progress: Progress,
) -> None:
    """From a started QEMU to a guest waiting for its command on the
    control port (serial_exec.py): a saved one loaded (it was saved
    waiting), or a cold boot waited for and saved for later runs."""
    if start.restore:
        restore(start, machine)
        return
    wait_for_guest(spec, start, machine, lambda: session.said("ready", 1.0), serial=True)
    if start.save:
        progress.begin("save")
        save_for_later(spec, image_id, start, machine, start.login.host_key, agent=True)


def wait_for_guest(
    spec: RunSpec,
    start: Start,
    machine: Machine,
    answered: Callable[[], bool],
    *,
    serial: bool = False,
    rebooted: bool = False,
    answered_before: bool = False,
) -> None:
    """Wait until the guest `answered` over SSH (or said it is ready over
    virtio-serial); a restored guest that does not, within RESTORE_TIMEOUT,
    is given up for a cold boot. `answered_before`: in this boot."""
    console_log = machine.spec.console_log
    stalls = StallWatch(console_log)
    # A restored guest booted long ago: its console says nothing of it.
    watch_boot = not (start.restore or answered_before)
    failures = FailureWatch(console_log, serial=serial) if watch_boot else None
    if rebooted:  # the console's earlier boots are not this one
        stalls.news.skip()
        if failures:
            failures.news.skip()
    how = "say it was ready over virtio-serial" if serial else "answer SSH"
    # A restored guest's sshd listens already, and a serial port is asked
    # for a second at a time: only a booting guest's sshd is waited for.
    by_banner = not (serial or start.restore or answered_before)
    port = machine.spec.network.ssh_port

    def booted() -> bool:
        try:
            machine.check_servers()
            now = time.monotonic()
            if stalls.stalled(now):
                raise GuestStalled(
                    "the guest's CPUs stalled while booting",
                    "rerun; if it keeps happening, try --cpus 1 or a host with KVM",
                )
            if (not by_banner or server_speaks(port, BANNER_WAIT)) and answered():
                return True
            failed = failures.failure(now) if failures else None
            if failed is not None:
                if failures and failures.before_os:
                    # The firmware's ACPI does nothing with the power button.
                    machine.graceful = False
                raise failed
            return False
        except BootcBoxError as e:
            if start.restore and not isinstance(e, RestoreFailed):
                raise RestoreFailed(e.message) from e  # whatever it was, boot cold
            raise

    def stopped(status: int) -> BootcBoxError:
        message = last_line(machine.qemu_log) or last_line(console_log)
        if start.restore:
            return RestoreFailed(f"the restored VM stopped (QEMU status {status}: {message})")
        return BootcBoxError(
            f"the VM stopped while booting (QEMU status {status}): {message}",
            "rerun with --console to see the boot",
        )

    def timed_out() -> BootcBoxError:
        if start.restore:
            return RestoreFailed(f"the restored VM did not {how} within {RESTORE_TIMEOUT:.0f} s")
        return BootcBoxError(
            f"the VM did not {how} within {spec.machine.timeout:.0f} s "
            f"(console: {last_line(console_log)!r})",
            "rerun with --console to see the boot, or raise --timeout",
        )

    wait_until(
        booted,
        machine.qemu,
        min(spec.machine.timeout, RESTORE_TIMEOUT) if start.restore else spec.machine.timeout,
        # A restored guest answers within a second or two: ask it often.
        interval=BANNER_INTERVAL if by_banner else 0.1,
        on_exit=stopped,
        on_timeout=timed_out,
        on_tick=report_waiting(f"Waiting for the VM to {how}"),
    )


def save_for_later(
    spec: RunSpec,
    image_id: str,
    start: Start,
    machine: Machine,
    host_key: str,
    *,
    agent: bool = False,
) -> None:
    """Save the freshly booted guest for later runs, before any command of
    this one touches it (`agent`: with bootc-box's unit waiting for one). A
    failed save costs the next run its warm start, never this run."""
    assert start.save is not None
    began = time.monotonic()
    try:
        save_state(machine.qmp_socket, machine.qemu, start.save.state)
        start.save.commit(image_id, spec.title, machine.spec, start.versions, host_key, agent=agent)
    except (BootcBoxError, OSError, ValueError) as e:
        log.warning("could not save the VM's state for later runs: %s", e)
        start.save.abandon()  # another run may save it
        return
    took = time.monotonic() - began
    log.info("Saved the VM's state for the next runs of %s in %.0f s", spec.title, took)


def stay_up(spec: RunSpec, machine: Machine, vm: VmEntry, up: Up) -> int:
    """Keep the VM up until QEMU ends; when its guest reboots, it boots
    again in the same QEMU, and is `booting` until it answers again."""
    reboots = RebootWatch(machine.spec.console_log)
    away = [False]  # rebooted, and not seen to answer since

    def follow_reboots() -> None:
        if reboots.rebooting():
            log.info("The guest is rebooting; waiting for it to answer again")
            vm.update(state=VmState.BOOTING)
            reboots.wait_for_reset(lambda: machine.qemu.poll() is None, REBOOT_GRACE)
            away[0] = True
        if not away[0]:
            return
        try:
            come_back(spec, machine, up)
        except BootAgain as e:
            # A vCPU that stopped (TCG) never answers: reset the machine, as
            # a cold boot would be booted again, and wait for the new boot.
            log.warning("%s; resetting the VM", e.message)
            with contextlib.suppress(OSError, ValueError):  # QEMU gone: wait() says so
                qmp_execute(machine.qmp_socket, "system_reset", 30)
            reboots.done()
            return
        except BootcBoxError as e:
            if machine.qemu.poll() is not None:
                return  # powered off, as it may while rebooting: wait() says so
            # The VM stays up, for its console and a look at what went
            # wrong, and is waited for again: a slow boot may yet answer.
            log.warning("the VM did not come back from its reboot: %s", e)
            vm.update(error=e.message)
            return
        reboots.done()
        away[0] = False
        vm.update(state=VmState.RUNNING, error="")
        log.info("VM %s is running again", vm.record.name)

    return machine.wait(follow_reboots)
