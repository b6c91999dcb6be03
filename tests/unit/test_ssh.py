import shlex
from pathlib import Path

from bootc_box.ssh import SshTarget, ssh_argv

TARGET = SshTarget("127.0.0.1", 40022, "root", Path("/run/id_ed25519"))


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
