from pathlib import Path

import pytest

from bootc_box import virtiofsd
from bootc_box.environment import Environment, probe_checks
from bootc_box.errors import BootcBoxError
from bootc_box.machine import FileServer, start_file_servers
from bootc_box.virtiofsd import (
    SANDBOX_VARIABLE,
    Sandbox,
    VirtiofsdSpec,
    start_virtiofsd,
    virtiofsd_argv,
)


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


def test_the_strongest_sandbox_that_works_is_used_and_the_next_server_tries_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "virtiofsd"
    binary.write_text(STAND_IN)
    binary.chmod(0o755)
    monkeypatch.setattr(virtiofsd, "find_virtiofsd", lambda: binary)
    monkeypatch.delenv(SANDBOX_VARIABLE, raising=False)
    spec = VirtiofsdSpec(tmp_path, tmp_path / "s.sock")
    other = VirtiofsdSpec(tmp_path, tmp_path / "t.sock")
    servers = (FileServer(spec, tmp_path / "log"), FileServer(other, tmp_path / "log2"))
    with start_file_servers(servers) as (server, second):
        assert server.spec.sandbox is Sandbox.CHROOT
        assert second.spec.sandbox is Sandbox.CHROOT
        server.check_running()
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split("--sandbox=")[1].split()[0] for c in calls] == [
        "namespace", "chroot", "chroot"
    ]  # fmt: skip
    assert server.process.poll() is not None  # stopped with its block


# Like virtiofsd in a container that allows neither sandbox: only
# --sandbox=none would start.
NO_SANDBOX = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
touch "$2"
case "$*" in
*--sandbox=none*) echo 'INFO  virtiofsd] Waiting for vhost-user socket connection...' >&2
    exec sleep 60 ;;
esac
echo 'ERROR virtiofsd] Error entering sandbox: Chroot(Os { code: 1 })' >&2
exit 1
"""


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    binary = tmp_path / "virtiofsd"
    binary.write_text(script)
    binary.chmod(0o755)
    monkeypatch.setattr(virtiofsd, "find_virtiofsd", lambda: binary)


def test_virtiofsd_never_falls_back_to_no_sandbox_unasked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(tmp_path, monkeypatch, NO_SANDBOX)
    monkeypatch.delenv(SANDBOX_VARIABLE, raising=False)
    spec = VirtiofsdSpec(tmp_path, tmp_path / "s.sock")
    with pytest.raises(BootcBoxError) as err, start_virtiofsd(spec, tmp_path / "log"):
        pass
    assert "cannot enter its namespace or chroot sandbox here" in err.value.message
    assert "--virtiofsd-sandbox=none" in (err.value.hint or "")
    calls = (tmp_path / "calls").read_text()
    assert "--sandbox=none" not in calls


def test_no_sandbox_only_when_the_user_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(tmp_path, monkeypatch, NO_SANDBOX)
    monkeypatch.setenv(SANDBOX_VARIABLE, "none")
    with start_virtiofsd(VirtiofsdSpec(tmp_path, tmp_path / "s.sock"), tmp_path / "log") as s:
        assert s.spec.sandbox is Sandbox.NONE
    assert (tmp_path / "calls").read_text().count("--sandbox=") == 1


def test_an_unknown_sandbox_choice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(tmp_path, monkeypatch, NO_SANDBOX)
    monkeypatch.setenv(SANDBOX_VARIABLE, "jail")
    spec = VirtiofsdSpec(tmp_path, tmp_path / "s.sock")
    with (
        pytest.raises(BootcBoxError, match="invalid BOOTC_BOX_VIRTIOFSD_SANDBOX 'jail'"),
        start_virtiofsd(spec, tmp_path / "log"),
    ):
        pass


def test_a_host_directory_maps_every_guest_id_to_its_owner() -> None:
    spec = VirtiofsdSpec(Path("/d"), Path("/s"), readonly=False, owner=(1000, 1001))
    argv = virtiofsd_argv(Path("/v"), spec)
    assert [a for a in argv if a.startswith("--translate-")] == [
        "--translate-uid=squash-guest:0:1000:4294967295",
        "--translate-uid=host:1000:0:1",
        "--translate-gid=squash-guest:0:1001:4294967295",
        "--translate-gid=host:1001:0:1",
    ]
    image = virtiofsd_argv(Path("/v"), VirtiofsdSpec(Path("/r"), Path("/s")))
    assert not [a for a in image if a.startswith("--translate-")]


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


def test_a_virtiofsd_that_cannot_map_ids_is_refused_for_writable_binds(tmp_path: Path) -> None:
    old = fake_program(tmp_path, "old", "virtiofsd 1.10.1")  # --help without --translate-uid
    new = tmp_path / "new"
    new.write_text("#!/bin/sh\necho '      --translate-uid <TRANSLATE_UID>'\n")
    new.chmod(0o755)
    with pytest.raises(BootcBoxError, match="cannot map the guest's ids on a writable --bind"):
        virtiofsd.require_id_translation(old)
    virtiofsd.require_id_translation(new)
