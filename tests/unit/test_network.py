"""The guest's network: passt's command line, and what its failures mean.
passt itself runs in the e2e tests (every VM's network is passt)."""

from pathlib import Path

import pytest

from bootc_box.network import Network, PortInUse, _start_failure, forwarding_failure, passt_argv
from bootc_box.publish import Publish


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_the_host_loopback_is_closed_to_the_guest_by_default() -> None:
    assert "--no-map-gw" in passt_argv(Network(Path("/run/n.sock"), 2222))
    assert "--no-map-gw" not in passt_argv(Network(Path("/run/n.sock"), 2222, host_loopback=True))


def test_the_guest_keeps_the_addresses_it_had_under_qemus_user_network() -> None:
    argv = passt_argv(Network(Path("/run/n.sock"), 2222))
    assert option(argv, "--address") == ["10.0.2.15"]
    assert option(argv, "--netmask") == ["24"]
    assert option(argv, "--gateway") == ["10.0.2.2"]
    assert option(argv, "--socket") == ["/run/n.sock"]


def test_ssh_and_then_the_published_ports_are_forwarded_on_their_addresses() -> None:
    publish = (Publish("127.0.0.1", 8080, 80), Publish("0.0.0.0", 5353, 53, "udp"))
    argv = passt_argv(Network(Path("/run/n.sock"), 40022, publish))
    assert option(argv, "--tcp-ports") == ["127.0.0.1/40022:22", "127.0.0.1/8080:80"]
    assert option(argv, "--udp-ports") == ["0.0.0.0/5353:53"]


def test_passt_ends_with_its_one_client_and_stays_a_child_we_reap() -> None:
    argv = passt_argv(Network(Path("/run/n.sock"), 2222))
    assert {"--foreground", "--one-off"} <= set(argv)


def test_a_taken_host_port_is_told_from_other_start_failures() -> None:
    # What passt (Debian 13's 0.0~git20250503) prints when it cannot bind a forward.
    message = "Failed to bind port 2299 (Address already in use) for option '-t 127.0.0.1/2299:22'"
    assert forwarding_failure(message) == 2299
    assert forwarding_failure("No interfaces with usable IPv4 routes") is None
    taken = _start_failure(1, message)
    assert isinstance(taken, PortInUse)
    assert taken.port == 2299
    assert taken.message == "host port 2299 is already in use"


def test_another_start_failure_names_passt_and_its_last_words() -> None:
    error = _start_failure(1, "Couldn't open user namespace")
    assert not isinstance(error, PortInUse)
    assert str(error) == "passt exited with status 1: Couldn't open user namespace"


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_each_protocol_gets_its_own_option(protocol: str) -> None:
    argv = passt_argv(Network(Path("/s"), 1, (Publish("127.0.0.1", 9, 9, protocol),)))
    assert len(option(argv, f"--{protocol}-ports")) == (2 if protocol == "tcp" else 1)
