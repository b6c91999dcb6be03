import pytest

from bootc_box.cli import cli
from bootc_box.options import bare_to_true, first_operand, wants_debug
from bootc_box.run_spec import what_to_boot

RUN_VALUES = {"--memory", "-m", "--name", "--tls-verify", "--karg", "--timeout"}


@pytest.mark.parametrize(
    ("args", "end"),
    [
        (["img", "--memory", "1G"], 0),
        (["--memory", "1G", "img"], 2),
        (["--memory=1G", "-d", "img"], 2),
        (["-m", "1G", "img"], 2),
        (["-m1G", "img"], 1),
        (["-dm", "1G", "img"], 2),
        (["--name", "--weird", "img"], 2),
        (["--timeout", "30", "--", "uname"], 2),
        (["-d"], 1),
    ],
)
def test_options_end_at_the_first_operand_or_dash_dash(args: list[str], end: int) -> None:
    assert first_operand(args, RUN_VALUES) == end


def test_a_bare_tls_verify_means_true_and_only_among_the_options() -> None:
    args = ["--tls-verify", "img", "podman", "pull", "--tls-verify", "x"]
    assert bare_to_true(args, "--tls-verify", RUN_VALUES) == [
        "--tls-verify=true", "img", "podman", "pull", "--tls-verify", "x"
    ]  # fmt: skip
    # A value of another option is not an option.
    assert bare_to_true(["--name", "--tls-verify", "img"], "--tls-verify", RUN_VALUES) == [
        "--name", "--tls-verify", "img"
    ]  # fmt: skip
    assert bare_to_true(["--tls-verify=false", "img"], "--tls-verify", RUN_VALUES) == [
        "--tls-verify=false", "img"
    ]  # fmt: skip


def test_debug_counts_only_before_the_command() -> None:
    assert wants_debug(["--debug", "run", "img"])
    assert not wants_debug(["run", "img", "--", "prog", "--debug"])
    assert not wants_debug(["run", "--debug", "img"])
    # A global option's value is no command name.
    assert wants_debug(["--virtiofsd-sandbox", "none", "--debug", "run", "img"])


def parse(*args: str) -> dict[str, object]:
    """What click hands the command (nothing runs)."""
    command = cli.commands[args[0]]
    return command.make_context(args[0], list(args[1:])).params


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("pull", "img"), None),
        (("pull", "--tls-verify", "img"), True),
        (("pull", "--tls-verify=false", "img"), False),
        (("pull", "--tls-verify=true", "img"), True),
    ],
)
def test_pull_takes_tls_verify_as_podman_does(args: tuple[str, ...], expected: object) -> None:
    params = parse(*args)
    assert params["tls_verify"] is expected
    assert params["image"] == "img"


def test_run_leaves_the_guest_commands_options_alone() -> None:
    params = parse("run", "--tls-verify", "img", "--", "podman", "pull", "--tls-verify", "x")
    assert params["tls_verify"] is True
    assert params["command"] == ("--", "podman", "pull", "--tls-verify", "x")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ssh", "--", "uname", "-a"), ("--", "uname", "-a")),
        (("ssh", "--timeout", "30", "--", "uname", "-a"), ("--", "uname", "-a")),
        (("ssh", "web", "--", "uname"), ("web", "--", "uname")),
        (("ssh", "--timeout", "30", "web"), ("web",)),
    ],
)
def test_ssh_tells_a_command_from_a_name_after_options(
    args: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert parse(*args)["args"] == expected


def test_run_takes_an_image_after_dash_dash_as_an_operand_whatever_it_looks_like() -> None:
    # The Tekton Task's line: an image param that looks like an option is
    # still the image (and then not a valid one), never an option.
    params = parse("run", "--memory", "1G", "--", "--bind=/:/x", "--", "sh", "-c", "true")
    assert params["binds"] == ()
    assert (params["image"], params["command"]) == ("--bind=/:/x", ("--", "sh", "-c", "true"))
    assert what_to_boot(None, "--bind=/:/x", ("--", "sh", "-c", "true")) == (
        "--bind=/:/x", ("sh", "-c", "true")
    )  # fmt: skip
    assert parse("run", "--", "img")["image"] == "img"
