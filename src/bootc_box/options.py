"""Command-line spellings click does not take as they are: where a command's
options end (so that what follows IMAGE or `--` is left alone), podman's
`--tls-verify` given bare or as `--tls-verify=false`, and `--debug`."""

from collections.abc import Sequence

from bootc_box.errors import BootcBoxError


def scan_options(args: Sequence[str], value_options: set[str]) -> tuple[list[int], int]:
    """The indices of the option words in `args` (not their values), and the
    index of the first operand (IMAGE, NAME) or `--`, given the options that
    take a value (`--memory`, `-m`)."""
    words: list[int] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return words, i
        words.append(i)
        i += 1
        if arg.startswith("--"):
            i += arg in value_options
            continue
        # A cluster of short options (-dm 2G, -m2G): the first that takes a
        # value takes the rest of the word, or else the next word.
        for at, letter in enumerate(arg[1:], start=1):
            if f"-{letter}" in value_options:
                i += at == len(arg) - 1
                break
    return words, len(args)


BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def bare_to_true(args: Sequence[str], flag: str, value_options: set[str]) -> list[str]:
    """`args` with a bare `flag` among the options written `flag=true`, as
    podman reads `--tls-verify`; words after the options are left alone. A
    bare `flag` followed by `false` (which would be taken for IMAGE, and the
    flag for true) is refused, naming `flag=false`."""
    words, _ = scan_options(args, value_options - {flag})
    for i in words:
        if args[i] == flag and i + 1 < len(args) and args[i + 1].lower() in BOOLEAN_WORDS:
            raise BootcBoxError(
                f"{flag} takes its value after '=': {flag} {args[i + 1]} would mean "
                f"{flag}=true and take {args[i + 1]!r} for IMAGE",
                f"write {flag}={args[i + 1].lower()}",
            )
    return [f"{flag}=true" if i in words and a == flag else a for i, a in enumerate(args)]


def first_operand(args: Sequence[str], value_options: set[str]) -> int:
    return scan_options(args, value_options)[1]


# The options of cli.py's top-level group that take a value, which is no
# command: `bootc-box --virtiofsd-sandbox none run IMAGE`. Unit tests hold
# this, and the entrypoint's BOOTC_BOX_VALUE_OPTIONS, to the group's.
GLOBAL_VALUE_OPTIONS = frozenset({"--virtiofsd-sandbox"})


def wants_debug(argv: Sequence[str]) -> bool:
    """Whether `--debug` is among the options before the command name (in
    `bootc-box run IMG -- prog --debug` it is the guest program's)."""
    return "--debug" in argv[: first_operand(argv, set(GLOBAL_VALUE_OPTIONS))]
