"""ssh.FirstLogin: a cold boot's first login checks the host key the guest
was given, and learns the guest's own key when its systemd ignored the
credential (older than 254). No guest with so old a systemd can be built
here offline, so ssh's answers are stood in for; the e2e tests log in to
real guests that took the key."""

import logging
from pathlib import Path

import pytest

from bootc_box import ssh as ssh_module
from bootc_box.errors import BootcBoxError
from bootc_box.ssh import Answer, FirstLogin, SshTarget

GIVEN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdpdmVu"
OWN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG93bg"


def answers(
    monkeypatch: pytest.MonkeyPatch, *said: Answer, learnt: str | None = None
) -> list[SshTarget]:
    """ssh answering `said` in turn; a learning login files `learnt`."""
    asked: list[SshTarget] = []
    replies = iter(said)

    def ssh_ready(target: SshTarget) -> Answer:
        asked.append(target)
        answer = next(replies)
        if answer is Answer.UP and target.known_hosts and learnt:
            target.known_hosts.write_text(f"bootc-box-vm {learnt}\n")
        return answer

    monkeypatch.setattr(ssh_module, "ssh_ready", ssh_ready)
    return asked


def target(tmp_path: Path) -> SshTarget:
    return SshTarget("127.0.0.1", 2222, "root", tmp_path / "key", GIVEN)


def test_a_guest_that_took_its_key_is_checked_against_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked = answers(monkeypatch, Answer.NOT_YET, Answer.UP)
    login = FirstLogin(target(tmp_path), tmp_path / "known_hosts")
    assert not login()
    assert login()
    assert [t.host_key for t in asked] == [GIVEN, GIVEN]
    assert login.target.host_key == GIVEN
    assert "another SSH host key" not in caplog.text


def test_a_guest_that_shows_its_own_key_has_it_learnt_once_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("stale\n")
    asked = answers(monkeypatch, Answer.KEY_REFUSED, Answer.UP, learnt=OWN)
    login = FirstLogin(target(tmp_path), known_hosts)
    assert login()
    assert (asked[1].host_key, asked[1].known_hosts) == (None, known_hosts)
    # Pinned from here on, to the key it showed.
    assert (login.target.host_key, login.target.known_hosts) == (OWN, None)
    assert caplog.text.count("another SSH host key than bootc-box gave it") == 1


def test_a_login_that_filed_no_key_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers(monkeypatch, Answer.KEY_REFUSED, Answer.UP)
    with pytest.raises(BootcBoxError, match="filed no host key"):
        FirstLogin(target(tmp_path), tmp_path / "known_hosts")()
