"""The KVM probe's verdict, kept for the host's boot: keys, the note's
format, and what a planted or stale note does (real files in a temp cache)."""

import os
from pathlib import Path

import pytest

from bootc_box import accel
from bootc_box.accel import AccelChoice, choose_accel
from bootc_box.boot import KernelBoot
from bootc_box.environment import Environment
from bootc_box.kvm_verdicts import (
    ProbeResult,
    find_verdict,
    format_verdict,
    parse_verdict,
    prune_verdicts,
    record_verdict,
    verdict_key,
)
from bootc_box.qemu import Accel

NATIVE = Environment(in_box=False)
BOOT = "0f3e1c2a-1111-2222-3333-444455556666"
KERNEL = KernelBoot(Path("/k"), Path("/i"), Path("/r.sock"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "bootc-box" / "kvm"


def test_the_key_changes_with_the_boot_the_binary_and_the_kind(tmp_path: Path) -> None:
    qemu, kvm = tmp_path / "qemu", tmp_path / "kvm"
    qemu.write_bytes(b"x")
    kvm.touch()
    key = verdict_key(str(qemu), kvm, "kernel", BOOT)
    assert key == verdict_key(str(qemu), kvm, "kernel", BOOT)
    assert key != verdict_key(str(qemu), kvm, "firmware", BOOT)
    assert key != verdict_key(str(qemu), kvm, "kernel", BOOT.replace("0", "9"))
    qemu.write_bytes(b"a new QEMU")
    assert key != verdict_key(str(qemu), kvm, "kernel", BOOT)


def test_a_note_round_trips_and_holds_only_for_its_boot() -> None:
    result = ProbeResult(False, "QEMU under KVM failed: KVM internal error. Suberror: 1")
    note = format_verdict(BOOT, result)
    assert parse_verdict(note, BOOT) == result
    assert parse_verdict(note, "another-boot") is None
    assert parse_verdict(f"{BOOT} maybe so".encode(), BOOT) is None
    assert parse_verdict(b"", BOOT) is None


def test_a_planted_reason_reaches_no_terminal_as_control_characters_or_lines() -> None:
    found = parse_verdict(
        f"{BOOT} no \x1b]0;owned\x07KVM \x1b[2Jbroken\nbootc-box: error: fake".encode(), BOOT
    )
    assert found is not None
    assert "\x1b" not in found.reason
    assert "\x07" not in found.reason
    assert "\n" not in found.reason
    assert found.reason.startswith("KVM broken bootc-box")


def test_a_note_cut_inside_a_character_is_still_read() -> None:
    note = format_verdict(BOOT, ProbeResult(False, "KVM internal error " + "\u00e9" * 200))
    assert len(note) == 200
    found = parse_verdict(note, BOOT)
    assert found is not None
    assert found.reason.startswith("KVM internal error")


def test_a_planted_link_for_the_directory_costs_a_probe_not_the_run(
    cache: Path, tmp_path: Path
) -> None:
    cache.parent.mkdir(parents=True)
    cache.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    record_verdict(NATIVE, "k", BOOT, ProbeResult(True, "ran"))
    assert find_verdict(NATIVE, "k", BOOT) is None
    assert not (tmp_path / "elsewhere").exists()


def test_a_note_is_whole_or_absent_and_leaves_no_partial_file(cache: Path) -> None:
    record_verdict(NATIVE, "k", BOOT, ProbeResult(True, "ran"))
    assert [p.name for p in cache.iterdir()] == ["k"]


def test_only_a_lasting_verdict_is_kept_and_the_first_writer_wins(cache: Path) -> None:
    record_verdict(NATIVE, "k1", BOOT, ProbeResult(False, "no progress in 8 s", lasting=False))
    assert find_verdict(NATIVE, "k1", BOOT) is None
    record_verdict(NATIVE, "k1", BOOT, ProbeResult(True, "the guest kernel ran under KVM"))
    record_verdict(NATIVE, "k1", BOOT, ProbeResult(False, "a later probe"))
    assert find_verdict(NATIVE, "k1", BOOT) == ProbeResult(True, "the guest kernel ran under KVM")


def test_a_planted_link_or_fifo_is_neither_followed_nor_written_through(
    cache: Path, tmp_path: Path
) -> None:
    cache.mkdir(parents=True)
    target = tmp_path / "target"
    target.write_text(f"{BOOT} ok planted")
    (cache / "link").symlink_to(target)
    os.mkfifo(cache / "fifo")
    assert find_verdict(NATIVE, "link", BOOT) is None
    assert find_verdict(NATIVE, "fifo", BOOT) is None
    record_verdict(NATIVE, "link", BOOT, ProbeResult(False, "KVM internal error"))
    assert target.read_text() == f"{BOOT} ok planted"


def test_a_big_note_is_not_read_whole(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "big").write_text(f"{BOOT} no " + "x" * 10_000_000)
    (cache / ".k.partial-0000").write_text("a run that died while writing")
    found = find_verdict(NATIVE, "big", BOOT)
    assert found is not None
    assert len(found.reason) < 200
    assert find_verdict(NATIVE, "k", BOOT) is None


def test_prune_keeps_only_this_boots_verdicts(cache: Path) -> None:
    record_verdict(NATIVE, "now", BOOT, ProbeResult(True, "ran"))
    record_verdict(NATIVE, "then", "an-earlier-boot", ProbeResult(True, "ran"))
    (cache / "junk").write_text("not a verdict")
    assert prune_verdicts(NATIVE, BOOT) == 2
    assert sorted(p.name for p in cache.iterdir()) == ["now"]


def test_a_kept_verdict_spares_the_probe(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qemu, kvm = tmp_path / "qemu", tmp_path / "kvm"
    qemu.write_bytes(b"x")
    kvm.touch(mode=0o600)
    monkeypatch.setattr(accel, "KVM_DEVICE", kvm)
    monkeypatch.setattr(accel, "host_boot_id", lambda: BOOT)
    probes: list[str] = []

    def probe(qemu: str, boot: object) -> ProbeResult:
        probes.append(qemu)
        return ProbeResult(False, "QEMU under KVM failed: KVM internal error. Suberror: 1")

    monkeypatch.setattr(accel, "probe_kvm", probe)
    assert choose_accel(AccelChoice.AUTO, str(qemu), KERNEL, NATIVE) is Accel.TCG
    assert choose_accel(AccelChoice.AUTO, str(qemu), KERNEL, NATIVE) is Accel.TCG
    assert len(probes) == 1
    monkeypatch.setattr(accel, "host_boot_id", lambda: "a-later-boot")
    assert choose_accel(AccelChoice.AUTO, str(qemu), KERNEL, NATIVE) is Accel.TCG
    assert len(probes) == 2
