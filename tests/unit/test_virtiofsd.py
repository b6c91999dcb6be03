from pathlib import Path

from bootc_box.virtiofsd import VirtiofsdSpec, virtiofsd_argv


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
