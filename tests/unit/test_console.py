import io
import os
from pathlib import Path

import pytest

from bootc_box.console import (
    STALL_REPORT,
    LogReader,
    RebootWatch,
    StallWatch,
    rotate_if_large,
    rotated,
    start_console_follower,
)
from tests.unit.guest import HOSTILE, SHOWN, MiB, reading


def test_a_log_past_its_limit_moves_to_dot_1_and_its_writer_goes_on_at_the_start(
    tmp_path: Path,
) -> None:
    log = tmp_path / "console.log"
    # As QEMU's append=on chardev and the supervisor's stderr write it.
    writer = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(writer, b"a" * 100)
        assert not rotate_if_large(log, limit=100)
        os.write(writer, b"b")
        assert rotate_if_large(log, limit=100)
        os.write(writer, b"after\n")
    finally:
        os.close(writer)
    assert rotated(log).read_bytes() == b"a" * 100 + b"b"
    assert log.read_bytes() == b"after\n"  # no hole where the old content was
    assert not rotate_if_large(tmp_path / "missing.log", limit=1)


def test_a_reader_gets_the_rest_of_a_rotated_log_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    with log.open("ab") as writer:
        writer.write(b"old line\n")
        writer.flush()
        reader = LogReader(log)
        try:
            assert reader.read() == b"old line\n"
            writer.write(b"unread\n")
            writer.flush()
            rotate_if_large(log, limit=1)
            writer.write(b"a longer line than before\n")
            writer.flush()
            assert reader.read() == b"unread\na longer line than before\n"
            assert reader.read() == b""
        finally:
            reader.close()


def test_the_follower_shows_the_guests_bytes_as_text(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    out = io.BytesIO()
    with start_console_follower(log, out), log.open("ab") as writer:
        writer.write(HOSTILE)
    assert out.getvalue() == SHOWN.encode()


def test_the_follower_copies_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    out = io.BytesIO()
    with start_console_follower(log, out) as follower, log.open("ab") as writer:
        writer.write(b"first\n")
        writer.flush()
        while b"first" not in out.getvalue():
            os.sched_yield()
        rotate_if_large(log, limit=1)
        writer.write(b"second\n")
        writer.flush()
        follower.stop()
    assert out.getvalue() == b"first\nsecond\n"


# What the fixture's 6.12 kernel printed when a TCG vCPU stopped getting ticks.
STALL = b"""[   26.081384] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   26.082622] rcu: \t1-...!: (0 ticks this GP) idle=bc00/0/0x0 softirq=13/13 fqs=0
"""


def test_a_stall_counts_once_the_console_stays_quiet_or_it_is_reported_again(
    tmp_path: Path,
) -> None:
    console = tmp_path / "console.log"
    watch = StallWatch(console, quiet=20)
    assert not watch.stalled(0)  # QEMU has not created it yet
    console.write_bytes(b"[    5.58] virtiofs virtio1: virtio_fs_setup_dax: No cache capability\n")
    assert not watch.stalled(1)
    with console.open("ab") as more:  # as QEMU writes it
        more.write(STALL)
    assert not watch.stalled(2)  # reported just now
    assert not watch.stalled(21)
    assert watch.stalled(22)  # and nothing since for 20 s


def test_a_stall_that_passes_does_not_count(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    watch = StallWatch(console, quiet=20)
    console.write_bytes(STALL)
    assert not watch.stalled(0)
    with console.open("ab") as more:
        more.write(b"[   31.2] systemd[1]: Reached target multi-user.target\n")
    assert not watch.stalled(15)  # the boot went on
    assert not watch.stalled(34)
    with console.open("ab") as more:
        more.write(STALL)  # the same stall, reported again
    assert watch.stalled(36)


def test_the_stall_watch_reads_only_what_was_appended_since_its_last_look(
    tmp_path: Path,
) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"[    1.00] a chatty guest\n" * (8 * MiB // 26))
    watch = StallWatch(console, quiet=20)
    stalled, read = reading(lambda: watch.stalled(0))
    assert not stalled
    assert read < MiB  # of 8 MiB
    with console.open("ab") as more:
        more.write(STALL)
    stalled, read = reading(lambda: watch.stalled(1))
    assert not stalled
    assert read < 4096  # the news, not the last TAIL bytes
    with console.open("ab") as more:
        more.write(STALL)
    assert watch.stalled(2)


def test_a_stall_report_cut_in_two_by_a_look_still_counts(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    watch = StallWatch(console, quiet=20)
    cut = STALL.index(STALL_REPORT) + 5
    with console.open("ab") as writer:
        writer.write(STALL[:cut])
        writer.flush()
        assert not watch.stalled(0)
        writer.write(STALL[cut:])
    assert not watch.stalled(1)
    assert watch.stalled(21)


def test_the_stall_watch_goes_on_after_a_rotation(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"[    1.00] booting\n" * 100)
    watch = StallWatch(console, quiet=20)
    assert not watch.stalled(0)
    rotate_if_large(console, limit=1)
    with console.open("ab") as more:
        more.write(STALL)
    assert not watch.stalled(1)
    assert watch.stalled(21)


def test_a_reader_between_the_steps_of_a_rotation_reads_each_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console follower reads while the rotation thread rotates: a read
    that falls between emptying the log and putting FILE.1 in place, or the
    other way round, must neither repeat nor lose lines."""
    log = tmp_path / "console.log"
    log.write_bytes(b"one\n")
    reader = LogReader(log)
    seen = [reader.read()]
    with log.open("ab") as f:
        f.write(b"two\n")
    truncate = os.truncate

    def read_then_truncate(path: Path, size: int) -> None:
        seen.append(reader.read())
        truncate(path, size)

    monkeypatch.setattr(os, "truncate", read_then_truncate)
    assert rotate_if_large(log, limit=1)
    with log.open("ab") as f:
        f.write(b"three\n")
    seen.append(reader.read())
    reader.close()
    assert b"".join(seen) == b"one\ntwo\nthree\n"


# From a guest's console, as journald forwards logind's messages and the
# kernel says its last words (this run's boot, then the next's).
REBOOT = b"""[   30.242686] systemd-logind[509]: The system will reboot now!
[   30.269862] systemd-logind[509]: System is rebooting.
[   30.707281] systemd[1]: Stopping ssh.service - OpenBSD Secure Shell server...
"""
RESET = b"[   33.281012] reboot: Restarting system\n"


def test_a_reboot_is_seen_when_it_begins_and_the_reset_before_the_guest_is_asked_again(
    tmp_path: Path,
) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(REBOOT + RESET)  # a reboot during the first boot: not this VM's
    watch = RebootWatch(console)
    assert not watch.rebooting()
    with console.open("ab") as more:
        more.write(REBOOT[:50])
        more.flush()
        assert not watch.rebooting()
        more.write(REBOOT[50:])  # the phrase cut in two by a look
        more.flush()
        assert watch.rebooting()
        assert not watch.reset
        more.write(RESET + b"[    0.000000] Linux version 6.12\n")
    watch.wait_for_reset(lambda: True, timeout=60)
    assert watch.reset
    watch.done()
    assert not watch.rebooting()
    with console.open("ab") as more:  # `reboot -f`: the kernel's words alone
        more.write(RESET)
    assert watch.rebooting()
    assert watch.reset


def test_waiting_for_the_reset_ends_with_the_machine(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(REBOOT)
    watch = RebootWatch(console)
    watch.wait_for_reset(lambda: False, timeout=60)  # QEMU ended: no wait
    assert not watch.reset
