import dataclasses
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bootc_box.errors import BootcBoxError
from bootc_box.hostkeys import checked_public_key, find_learnt_key
from bootc_box.ssh import (
    SshTarget,
    check_private_key,
    master_socket,
    remote_command,
    server_speaks,
    ssh_argv,
    ssh_config,
)

TARGET = SshTarget("127.0.0.1", 40022, "root", Path("/run/id_ed25519"))
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


def test_uses_only_the_run_key_and_never_a_password() -> None:
    argv = ssh_argv(TARGET)
    assert argv[argv.index("-i") + 1] == "/run/id_ed25519"
    assert argv[argv.index("-p") + 1] == "40022"
    opts = options(argv)
    assert "IdentitiesOnly=yes" in opts
    assert "PasswordAuthentication=no" in opts
    assert "KbdInteractiveAuthentication=no" in opts
    assert "BatchMode=yes" in opts


def test_command_arguments_survive_the_remote_shell() -> None:
    argv = ssh_argv(TARGET, ["sh", "-c", "echo 'a b'; exit 7"])
    assert argv[-3:-1] == ["root@127.0.0.1", "--"]
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo 'a b'; exit 7"]


def test_tty_only_when_asked() -> None:
    assert "-t" in ssh_argv(TARGET, tty=True)
    assert "-T" in ssh_argv(TARGET, ["true"])
    assert ssh_argv(TARGET, tty=True)[-1] == "root@127.0.0.1"


def test_a_login_through_the_runs_connection_falls_back_to_its_own() -> None:
    """With a control socket, ssh uses the connection there, or connects
    itself (with the run's key and the pinned host key) when there is none."""
    target = dataclasses.replace(TARGET, control=Path("/run/vm/ssh.control"), host_key=HOST_KEY)
    opts = options(ssh_argv(target, ["true"]))
    assert "ControlPath=/run/vm/ssh.control" in opts
    assert "ControlMaster=no" in opts
    assert "StrictHostKeyChecking=yes" in opts


def test_only_a_login_asked_to_becomes_the_master_and_only_with_a_socket() -> None:
    target = dataclasses.replace(TARGET, control=Path("/run/vm/ssh.control"))
    opts = options(ssh_argv(target, ["true"], master=True))
    assert "ControlMaster=yes" in opts
    assert "ControlPersist=60" in opts  # gone a minute after a run that died
    assert not [o for o in options(ssh_argv(TARGET, master=True)) if o.startswith("Control")]


def test_the_master_socket_is_short_whatever_the_vm_and_goes_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSSH binds a name 17 bytes longer than ControlPath first: a path
    that leaves no room for that would fail every login through it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with master_socket() as control:
        assert control is not None
        assert len(str(control)) + 17 <= 107
        assert control.parent.stat().st_mode & 0o777 == 0o700
        directory = control.parent
    assert not directory.exists()
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with master_socket() as control:
        assert control is None
    assert list(deep.iterdir()) == []


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", path], check=True)
    return path


def test_a_good_key_passes(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    assert check_private_key(key) == key
    (tmp_path / "k.pub").unlink()  # derived from the private key instead
    assert check_private_key(key) == key


def test_a_key_with_a_passphrase_is_refused_before_booting(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k", passphrase="secret words")
    with pytest.raises(BootcBoxError, match="protected by a passphrase") as err:
        check_private_key(key)
    assert "ssh-keygen -t ed25519 -N '' -f FILE" in str(err.value)


def test_a_public_half_from_another_key_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    other = keygen(tmp_path / "other")
    (tmp_path / "k.pub").write_bytes((tmp_path / "other.pub").read_bytes())
    assert other.exists()
    with pytest.raises(BootcBoxError, match=r"k.pub is not the public half of --ssh-key"):
        check_private_key(key)


def test_a_file_that_is_no_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("not a key\n")
    key.chmod(0o600)
    with pytest.raises(BootcBoxError, match="is not a private key ssh can read"):
        check_private_key(key)


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGt0ZXN0a2V5"


def test_ssh_config_logs_in_as_bootc_box_does() -> None:
    target = SshTarget("127.0.0.1", 40022, "root", Path("/run/vms/web/id_ed25519"), HOST_KEY)
    stanza = ssh_config("web", target).splitlines()
    assert stanza[:5] == [
        "Host web",
        "    HostName 127.0.0.1",
        "    Port 40022",
        "    User root",
        "    IdentityFile /run/vms/web/id_ed25519",
    ]
    options = dict(line.split(maxsplit=1) for line in stanza[5:])
    argv = ssh_argv(target)
    # The same options as bootc-box's own logins, each one.
    assert {f"{k}={v}" for k, v in options.items()} <= set(argv)
    assert options["PasswordAuthentication"] == "no"
    assert options["IdentitiesOnly"] == "yes"
    # The VM's host key, and no other, whatever port it is on today; told
    # by a command, since the stanza is read where the box's files are not.
    assert options["StrictHostKeyChecking"] == "yes"
    assert options["HostKeyAlias"] == "bootc-box-vm"
    assert options["KnownHostsCommand"] == f"/bin/echo bootc-box-vm {HOST_KEY}"
    assert options["UserKnownHostsFile"] == "/dev/null"


def test_a_first_login_without_a_key_to_check_learns_it_into_a_file(tmp_path: Path) -> None:
    target = SshTarget("127.0.0.1", 2222, "root", tmp_path / "k", known_hosts=tmp_path / "kh")
    argv = ssh_argv(target)
    assert "StrictHostKeyChecking=accept-new" in argv
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in argv
    (tmp_path / "kh").write_text(f"bootc-box-vm {HOST_KEY}\n")
    assert find_learnt_key(tmp_path / "kh") == HOST_KEY
    assert find_learnt_key(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    "text",
    ["ssh-rsa AAAAB3Nza", "ssh-ed25519", "ssh-ed25519 AAAA%h", "ssh-ed25519 -oProxyCommand=x", ""],
)
def test_only_an_ed25519_key_reaches_sshs_options(text: str) -> None:
    with pytest.raises(BootcBoxError, match="not an ed25519 SSH host key"):
        checked_public_key(text)
    assert checked_public_key(f"{HOST_KEY} a comment\n") == HOST_KEY


def in_shell(command: list[str], cwd: Path) -> str:
    """What the guest's shell does with the string ssh hands it."""
    remote = ssh_argv(TARGET, command)[-1]
    return subprocess.run(
        ["sh", "-c", remote], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_one_argument_is_a_shell_command_line(tmp_path: Path) -> None:
    # README: bootc-box ssh web -- 'echo hello > /root/note'
    assert in_shell(["echo hello > note; cat note | tr a-z A-Z"], tmp_path) == "HELLO\n"


def test_several_arguments_are_a_program_and_its_arguments(tmp_path: Path) -> None:
    assert in_shell(["printf", "[%s]\\n", "a b", "$HOME", ">x"], tmp_path) == (
        "[a b]\n[$HOME]\n[>x]\n"
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("command", "remote"),
    [
        (["true"], "true"),
        (["systemctl is-system-running --wait"], "systemctl is-system-running --wait"),
        (["cat", "/root/my note"], "cat '/root/my note'"),
    ],
)
def test_remote_command(command: list[str], remote: str) -> None:
    assert remote_command(command) == remote


def listening(reply: bytes | None) -> tuple[socket.socket, threading.Thread]:
    """A server on a free loopback port that sends `reply` to its first
    client and closes, or (None) says nothing until the client leaves."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            if reply is None:
                conn.recv(1)  # until the client closes
            else:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(
    ("reply", "speaks"),
    [(b"SSH-2.0-OpenSSH_10.0\r\n", True), (b"", False), (None, False)],
    ids=["banner", "closed-at-once", "silent"],
)
def test_only_a_server_that_says_something_is_worth_a_login(
    reply: bytes | None, speaks: bool
) -> None:
    """As the forwarded port of a guest whose sshd listens (banner), whose
    network is up but sshd is not (closed at once), and that has no address
    yet (silent: the forwarder holds the connection)."""
    server, thread = listening(reply)
    with server:
        began = time.monotonic()
        assert server_speaks(server.getsockname()[1], timeout=0.5) is speaks
        assert time.monotonic() - began < 5
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_nothing_listening_is_no_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    assert server_speaks(port, timeout=0.5) is False
