from pathlib import Path

import pytest

from bootc_box import virtiofsd
from bootc_box.environment import Environment, probe_checks
from bootc_box.errors import BootcBoxError
from bootc_box.virtiofsd import Sandbox, VirtiofsdSpec, start_virtiofsd, virtiofsd_argv


def test_argv_shares_the_root_read_only_with_caching() -> None:
    argv = virtiofsd_argv(Path("/v"), VirtiofsdSpec(Path("/mnt/root"), Path("/run/s.sock")))
    assert argv[0] == "/v"
    assert argv[argv.index("--socket-path") + 1] == "/run/s.sock"
    assert argv[argv.index("--shared-dir") + 1] == "/mnt/root"
    assert "--readonly" in argv
    assert "--cache=always" in argv
    assert "--sandbox=namespace" in argv


def test_argv_for_a_writable_share_has_no_readonly() -> None:
    spec = VirtiofsdSpec(Path("/d"), Path("/s"), readonly=False)
    assert "--readonly" not in virtiofsd_argv(Path("/v"), spec)


def test_a_bind_lets_the_guest_see_host_edits() -> None:
    spec = VirtiofsdSpec(Path("/d"), Path("/s"), readonly=True, host_edits=True)
    argv = virtiofsd_argv(Path("/v"), spec)
    assert "--cache=auto" in argv
    assert "--cache=always" not in argv


# A stand-in for virtiofsd, which this host lacks (the box has it; e2e tests
# run it there): like virtiofsd 1.13 in a rootless box, it creates its socket,
# then fails to enter the namespace sandbox, and works in the chroot one.
STAND_IN = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
socket=$2
touch "$socket"
case "$*" in
*--sandbox=namespace*)
    echo 'ERROR virtiofsd] Error entering sandbox: MountProc(Os { code: 1 })' >&2; exit 1 ;;
esac
echo 'INFO  virtiofsd] Waiting for vhost-user socket connection...' >&2
exec sleep 60
"""


def test_the_strongest_sandbox_that_works_is_used_and_then_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "virtiofsd"
    binary.write_text(STAND_IN)
    binary.chmod(0o755)
    monkeypatch.setattr(virtiofsd, "find_virtiofsd", lambda: binary)
    monkeypatch.setattr(virtiofsd, "_working_sandbox", [])
    spec = VirtiofsdSpec(tmp_path, tmp_path / "s.sock")
    with start_virtiofsd(spec, tmp_path / "log") as server:
        assert server.spec.sandbox is Sandbox.CHROOT
        server.check_running()
    with start_virtiofsd(spec, tmp_path / "log") as server:
        assert server.spec.sandbox is Sandbox.CHROOT
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split("--sandbox=")[1].split()[0] for c in calls] == [
        "namespace", "chroot", "chroot"
    ]  # fmt: skip
    assert server.process.poll() is not None  # stopped with its block


NATIVE = Environment(in_box=False)


def fake_program(directory: Path, name: str, version_line: str) -> Path:
    """A stand-in that only answers --version: enough to tell which virtiofsd it is."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)
    return path


def test_qemus_old_c_virtiofsd_is_not_taken_for_one_we_can_drive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_program(tmp_path, "virtiofsd", "virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7)")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(virtiofsd, "CANDIDATES", ())
    assert virtiofsd.find_virtiofsd() is None
    assert virtiofsd.find_old_virtiofsd() == old
    with pytest.raises(BootcBoxError, match="virtiofsd is not installed; install the virtiofsd"):
        virtiofsd.require_virtiofsd()
    checks = {c.name: c for c in probe_checks(NATIVE, None, old)}
    assert not checks["virtiofsd"].ok
    assert checks["virtiofsd"].detail == (
        f"only QEMU's old C virtiofsd, at {old}, which takes other options"
    )


def test_the_rust_virtiofsd_is_found_beside_an_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_program(tmp_path, "virtiofsd", "virtiofsd version 7.2.22")
    (tmp_path / "libexec").mkdir()
    rust = fake_program(tmp_path / "libexec", "virtiofsd", "virtiofsd 1.13.2")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(virtiofsd, "CANDIDATES", (rust,))
    assert virtiofsd.find_virtiofsd() == rust
