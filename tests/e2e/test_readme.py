"""The README's shell examples, run as a user runs them, on the fixture.

Which examples. Every code block of README.md, indented or fenced (bare, or
marked bash, sh, shell or console), is a shell example and each of its lines
a command, unless a table here says otherwise:

- NOT_COMMANDS: blocks that show output or a synopsis (by their first line);
- NEEDS: blocks and lines that need what this machine lacks (a registry, a
  cluster, a host QEMU 9, an image that ships bootc), each with its reason;
- SHOWS_OUTPUT: commands followed, in their block, by the output they print.

So a new README example runs by default, and fails loudly if it cannot.
Every key of these tables must still start a README line (the last test).

How. A block is one scenario: its lines run in order, each in
`bash -o pipefail -c` (a line `NAME=...` sets NAME for the lines after it).
A block that works on a box container an earlier block started (`podman exec
vm1 ...` without a `podman run --name vm1` of its own) continues that block's
scenario. Each line must exit 0; `# prints "X"` after it means it prints X;
output the README shows is compared with what was printed, numbers, times
and IDs as patterns (CHECKS). `-it` lines run on a pseudo-terminal, with
what a user would type (TYPED). `logs -f` follows until its VM stops, so it
runs beside the next line, which stops that VM, and must then end with
status 0. What the README takes for granted (your SSH key, a file to copy, a
directory to rsync) is made first (GIVEN).

Changes from the text, as a user on this machine would make them:
- the README's example images (IMAGE, localhost/my-image, ...) are the
  fixture, and the published box image is localhost/bootc-box:latest;
- the volume `bootc-box` is the session's warm volume, which holds the
  fixture's saved VM: each VM here restores in seconds instead of booting;
- box container names get a unique suffix and host ports are free ones;
- HOME and the working directory are fresh temporary directories (a line
  that names a file of the checkout, like `examples/`, runs at its root),
  and PATH starts with this venv's bin (pytest, tmt);
- `--device /dev/kvm` stays and `--accel` is left at `auto`, as every other
  e2e test leaves it: this machine's KVM (KVM-PVM) cannot run the guest,
  which bootc-box detects, falling back to TCG with a warning. Forcing
  `--accel tcg` would instead miss the saved state where KVM works.

Known faults: a README line in CORRECTIONS runs as corrected; a line in BUGS
may fail (a bug in bootc-box). Either makes its scenario xfail, naming them,
once every other line passed.
"""

import fcntl
import json
import os
import pty
import re
import secrets
import selectors
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pytest

from bootc_box.network import free_port
from tests.e2e.conftest import (
    BOOT_DEADLINE,
    BOX,
    FIXTURE,
    ROOT,
    CacheVolume,
    podman,
)

T = TypeVar("T")
README = ROOT / "README.md"
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
# The README's names for the image a user boots, longest first.
EXAMPLE_IMAGES = (
    "quay.io/example/my-bootc-image:latest",
    "localhost/my-image:latest",
    "localhost/my-image",
    "OTHER-IMAGE",
    "IMAGE",
)
PUBLISHED_BOXES = ("ghcr.io/bootc-box/bootc-box:main",)
# How long a `logs -f` may take to notice that its VM stopped.
FOLLOW_GRACE = 120.0

# Blocks that are no commands, by their first line: what they are.
NOT_COMMANDS = {
    "The output of every step goes to": "ci/demo's output (ci/demo is not run: see NEEDS)",
    "bootc-box run [OPTIONS] IMAGE": "the commands' synopsis",
    "bootc-box: VM up in": "run's summary lines, compared with the first example's",
    "REPOSITORY": "bootc-box images' table, compared in the lab example",
    '{"name": "web"': "inspect --json's output, compared in the host-network example",
    "provision:": "a tmt plan's YAML",
}

# Blocks (by their first line) and lines that need what is not here.
NEEDS = {
    "ci/demo": "installs host packages with apt and boots on the volume named bootc-box,"
    " the user's own: a fresh machine's set-up, run by hand",
    "ci/test": "runs every test, this one included",
    "mkdir -p out": "to-disk runs the image's own bootc install: it needs an image that ships"
    " bootc, not the fixture (tests/e2e/test_disks.py runs it on the installable fixture)",
    "podman run -d --name web": "run --persistent installs the image as to-disk does: it needs"
    " an image that ships bootc (tests/e2e/test_disks.py runs it on the installable fixture)",
    "podman run -d --name sb": "run --persistent --firmware uefi-secure needs an image that"
    " ships bootc and a signed boot chain (tests/e2e/test_disks.py runs this flow on the"
    " installable fixture)",
    "podman build -t localhost/my-image:v2 .": "an upgrade needs an image that ships bootc"
    " (tests/e2e/test_disks.py runs this flow on the installable fixture with its stand-in"
    " bootc)",
    "MIRROR_CERT_DIR=": "needs a mirror registry and writes the host's /etc/containers"
    " (tests/e2e/test_mirror.py runs this recipe against a local TLS registry)",
    "kubectl apply": "needs a Kubernetes cluster with Tekton"
    " (tests/e2e/test_tekton.py runs the Task's step with podman)",
    "pip install --user .": "runs natively on the host, which needs QEMU 9 and the Rust"
    " virtiofsd; this Debian 12 host has neither (tests/e2e/test_native.py runs it in a"
    " Debian 13 container)",
    "curl http://127.0.0.1:8080/": "the README's image serves HTTP on port 80; the fixture"
    " serves nothing",
    "pytest --bootc-image localhost/bootc-box-fixture:latest examples/": "the same run as"
    " tests/e2e/test_pytest_plugin.py's, which also checks what it leaves: one VM's boot"
    " less for CI",
    "pip install '.[tmt]'": "the plan ends with tmt's status 1 by design (one test fails on"
    " purpose); tests/e2e/test_tmt.py runs it and checks that",
    "tmt run --all --skip prepare provision --how connect": "the same tmt run as"
    " tests/e2e/test_vm_box.py's test_inspect_is_enough_for_tmt, from inspect's output"
    " alone: 40 s of tmt less for CI",
    'podman run --rm --device /dev/kvm -v bootc-box:/cache -v "$PWD:$PWD" -w "$PWD"': "the"
    " provisioning options, which tests/e2e/test_provision.py gives a VM and checks one by"
    " one in the guest: a disk attached means a cold boot, one less for CI",
}


# Commands followed, in their block, by the output they print.
SHOWS_OUTPUT = ("podman exec lab bootc-box list",)


@dataclass(frozen=True)
class Correction:
    text: str  # the line as the README should have it
    reason: str


# README lines known to be wrong, each as the README has it (spaces
# collapsed), with what it should say: the proposed fix.
CORRECTIONS: dict[str, Correction] = {}


# Lines that fail, now and then, because of a bug in bootc-box.
BUGS: dict[str, str] = {}


@dataclass(frozen=True)
class Block:
    number: int  # of its first line in README.md
    language: str
    lines: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.lines[0]


def one_line(text: str) -> str:
    """Continuation lines joined, spaces collapsed."""
    return " ".join(text.replace("\\\n", " ").split())


@dataclass(frozen=True)
class Line:
    number: int
    text: str  # as the README has it, continuation lines included
    shown: tuple[str, ...] = ()  # output the README shows after it
    correction: Correction | None = None

    @property
    def key(self) -> str:
        """What the tables here are matched against: the README's text."""
        return one_line(self.text)

    @property
    def command(self) -> str:
        """What runs: the README's text, or its correction."""
        return self.correction.text if self.correction else self.text

    @property
    def command_key(self) -> str:
        return one_line(self.command)


def code_blocks(markdown: str) -> list[Block]:
    """Fenced blocks, and CommonMark's indented ones (after a blank line)."""
    lines = markdown.splitlines()
    blocks, i, after_blank = [], 0, True
    while i < len(lines):
        fence = re.match(r"```(\w*)", lines[i])
        if fence:
            end = lines.index("```", i + 1)
            blocks.append(Block(i + 2, fence.group(1), tuple(lines[i + 1 : end])))
            i, after_blank = end + 1, False
        elif after_blank and lines[i].startswith("    ") and lines[i].strip():
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = [line[4:] for line in lines[i:end]]
            while not body[-1].strip():
                body.pop()
            blocks.append(Block(i + 1, "", tuple(body)))
            i, after_blank = end, True
        else:
            after_blank = not lines[i].strip()
            i += 1
    return blocks


def entry(table: Mapping[str, T], text: str) -> T | None:
    """The value of the table's key that `text` starts with."""
    return next((value for key, value in table.items() if text.startswith(key)), None)


def command_lines(block: Block) -> list[Line]:
    """The block's commands, continuation lines joined, with the output shown
    after a command of SHOWS_OUTPUT: its lines up to the next one that
    starts like that command."""
    found: list[Line] = []
    i = 0
    while i < len(block.lines):
        start, text = i, block.lines[i]
        while text.endswith("\\"):
            i += 1
            text += "\n" + block.lines[i]
        i += 1
        line = Line(block.number + start, text)
        if line.key.startswith(SHOWS_OUTPUT):
            program = line.key.split()[0]
            end = i
            while end < len(block.lines) and not block.lines[end].startswith(program):
                end += 1
            line, i = replace(line, shown=block.lines[i:end]), end
        found.append(replace(line, correction=CORRECTIONS.get(line.key)))
    return found


def box_names(line: Line) -> list[str]:
    """The box containers a line starts: `podman run ... --name NAME ... BOX`."""
    started = re.match(r"podman run (.*?) \S+/bootc-box:\S+", line.command_key)
    return re.findall(r"--name[ =](\S+)", started.group(1)) if started else []


def used_boxes(line: Line) -> list[str]:
    used = re.match(
        r"podman (?:exec|logs|stop|start|rm) (?:-\S+ )*(?:\d+ )?(\S+)", line.command_key
    )
    return [used.group(1)] if used else []


@dataclass
class Scenario:
    number: int
    lines: list[Line] = field(default_factory=list)
    skip: str | None = None

    @property
    def boxes(self) -> set[str]:
        return {name for line in self.lines for name in box_names(line)}


def readme_scenarios(markdown: str) -> list[Scenario]:
    scenarios: list[Scenario] = []
    for block in code_blocks(markdown):
        if block.language not in SHELL_LANGUAGES or entry(NOT_COMMANDS, block.first) is not None:
            continue
        lines = command_lines(block)
        reason = entry(NEEDS, block.first)
        started = {name for line in lines for name in box_names(line)}
        used = {name for line in lines for name in used_boxes(line)} - started
        earlier = [s for s in scenarios if used and used <= s.boxes and not s.skip]
        if not reason and earlier:
            earlier[-1].lines += lines
        else:
            scenarios.append(Scenario(block.number, lines, reason))
    return scenarios


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str  # "" on a terminal, where both come on one stream

    def __str__(self) -> str:
        return f"status {self.status}\nstdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\r")


def terminal_text(raw: bytes) -> str:
    return ANSI.sub("", raw.decode(errors="replace"))


def kill_group(process: "subprocess.Popen[bytes]") -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_in_terminal(
    argv: list[str], typed: str, env: dict[str, str], cwd: Path, timeout: float
) -> Result:
    """`argv` with a pseudo-terminal for its stdin, stdout and stderr, as
    a `-it` line in a terminal; `typed` is written to it at once (the
    terminal keeps it until the program reads)."""
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    process = subprocess.Popen(
        argv, stdin=sub, stdout=sub, stderr=sub, env=env, cwd=cwd, start_new_session=True
    )
    os.close(sub)
    seen = b""
    try:
        if typed:
            os.write(main, typed.encode())
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(main, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise AssertionError(f"{argv} still runs after {timeout} s: {seen[-3000:]!r}")
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every holder of the terminal closed it
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
        return Result(process.wait(timeout=60), terminal_text(seen), "")
    finally:
        os.close(main)
        if process.poll() is None:
            kill_group(process)


def run_piped(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Result:
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=env, cwd=cwd, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            out, err = process.communicate()
            raise AssertionError(f"{argv} still ran after {timeout} s: {out!r} {err!r}") from None
        return Result(process.returncode, out.decode(errors="replace"), err.decode())


@dataclass(frozen=True)
class Following:
    """A `logs -f` running beside the lines after it."""

    line: Line
    process: "subprocess.Popen[bytes]"


@dataclass
class Workspace:
    """One scenario's directories, names, variables and what it started."""

    root: Path
    volume: CacheVolume
    names: dict[str, str]  # a box container's README name: its name here
    ports: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    following: list[Following] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # corrections, known bugs

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def box(self, name: str) -> str:
        return self.names[name]

    def substitute(self, text: str) -> str:
        for published in PUBLISHED_BOXES:
            text = text.replace(published, BOX)
        text = re.sub(r"(?<=-v )bootc-box:/cache", f"{self.volume.name}:/cache", text)
        for image in EXAMPLE_IMAGES:
            text = re.sub(rf"(?<![\w/.:-]){re.escape(image)}(?![\w/.:-])", FIXTURE, text)
        for words in (self.names, self.ports):
            for old, new in words.items():
                text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, text)
        return text

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            # tmt's run directories, and the pytest plugin's volume (the
            # README's default is the volume named bootc-box).
            "TMT_WORKDIR_ROOT": str(self.root / "tmt"),
            "PYTEST_ADDOPTS": f"--bootc-cache-volume {self.volume.name} -p no:cacheprovider",
            **self.variables,
        }

    def cwd(self, text: str) -> Path:
        """The checkout's root for a line that names one of its files."""
        words = text.split()
        in_checkout = any(
            "/" in word and word[0] not in "/~$.-\"'" and (ROOT / word).exists() for word in words
        )
        return ROOT if in_checkout else self.work

    def run(self, line: Line) -> Result:
        text = self.substitute(line.command)
        assigned = re.search(r"^([A-Za-z_]\w*)=", line.command, re.MULTILINE)
        value = self.root / "assigned"
        if assigned:
            text += f'\nstatus=$?; printf %s "${assigned.group(1)}" > {value}; exit $status'
        argv = ["bash", "-o", "pipefail", "-c", text]
        typed = entry(TYPED, line.key)
        if re.search(r"\bpodman (?:run|exec)(?: -\S+)*? (?:-it|-ti|-t|--tty)\b", line.command_key):
            result = run_in_terminal(argv, typed or "", self.env(), self.cwd(text), BOOT_DEADLINE)
        elif re.search(r"\blogs (-f|--follow)\b", line.command_key):
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=self.env(), cwd=self.cwd(text), start_new_session=True,
            )  # fmt: skip
            self.following.append(Following(line, process))
            return Result(0, "", "")
        else:
            result = run_piped(argv, self.env(), self.cwd(text), BOOT_DEADLINE)
        if assigned and result.status == 0:
            self.variables[assigned.group(1)] = value.read_text()
        return result

    def finish_following(self) -> None:
        """Each `logs -f` ended, with status 0, once the line after it stopped its VM."""
        for follow in self.following:
            try:
                out, _ = follow.process.communicate(timeout=FOLLOW_GRACE)
            except subprocess.TimeoutExpired:
                kill_group(follow.process)
                raise AssertionError(
                    f"README line {follow.line.number} ({follow.line.key}) still follows"
                    f" {FOLLOW_GRACE} s after its VM stopped"
                ) from None
            assert follow.process.returncode == 0, f"line {follow.line.number}: {out!r}"
            assert out.strip(), f"line {follow.line.number} printed nothing"
        self.following.clear()

    def step(self, line: Line) -> None:
        if entry(NEEDS, line.key):
            return
        if line.correction:
            self.expected.append(f"line {line.number}: {line.correction.reason}")
        given = entry(GIVEN, line.key)
        if given:
            given(self)
        following = bool(self.following)
        result = self.run(line)
        bug = entry(BUGS, line.key)
        if bug and result.status != 0:
            self.expected.append(f"line {line.number}: {bug}")
            return
        assert result.status == 0, f"README line {line.number}: {line.command}\n{result}"
        if following:
            self.finish_following()
        prints = re.search(r'#\s*prints\s+"([^"]*)"\s*$', line.key)
        if prints:
            assert result.stdout == prints.group(1) + "\n", f"line {line.number}: {result}"
        check = entry(CHECKS, line.key)
        if check:
            check(self, line, result)


@contextmanager
def workspace(root: Path, volume: CacheVolume, scenario: Scenario) -> Iterator[Workspace]:
    """Removes every box container the scenario started, and a pytest
    plugin's, even when a line failed: each VM stopped by bootc-box first,
    so that nothing of it is left on the shared volume."""
    suffix = secrets.token_hex(3)
    names = {name: f"{name}-readme-{suffix}" for name in scenario.boxes}
    published = {
        port
        for line in scenario.lines
        for port in re.findall(r"(?:-p|--publish) (?:[\d.]+:)?(\d+):", line.command_key)
    }
    ws = Workspace(root, volume, names, {port: str(free_port()) for port in published})
    ws.home.mkdir()
    ws.work.mkdir()
    before = set(podman("ps", "-a", "--format", "{{.Names}}").split())
    try:
        yield ws
    finally:
        for follow in ws.following:
            kill_group(follow.process)
        after = set(podman("ps", "-a", "--format", "{{.Names}}").split()) - before
        plugin_boxes = {name for name in after if name.startswith("bootc-box-pytest")}
        for container in sorted({*names.values(), *plugin_boxes} & after):
            subprocess.run(["podman", "exec", container, "bootc-box", "rm", "--force", "--all"],
                           capture_output=True, check=False, timeout=300)  # fmt: skip
            subprocess.run(["podman", "rm", "--force", "--time", "30", container],
                           capture_output=True, check=False, timeout=300)  # fmt: skip


# What the README takes for granted before a line (by its start).
def make_ssh_key(ws: Workspace) -> None:
    (ws.home / ".ssh/bootc").mkdir(parents=True)
    key = ws.home / ".ssh/bootc/id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)


def make_site(ws: Workspace) -> None:
    (ws.work / "site").mkdir()
    (ws.work / "site/index.html").write_text("<p>hello</p>\n")


def make_app_conf(ws: Workspace) -> None:
    """The file in the box's /work, and /etc/app in the guest, as the README's image has it."""
    (ws.work / "app.conf").write_text("setting = 1\n")
    mkdir = podman(
        "exec", ws.box("vm1"), "bootc-box", "ssh", "web", "--", "mkdir", "-p", "/etc/app"
    )
    assert mkdir == ""


GIVEN: dict[str, Callable[[Workspace], None]] = {
    "podman run -d --name vm1 --network host": make_ssh_key,
    "rsync -e 'ssh -F vm.conf' -a ./site/": make_site,
    "podman exec vm1 bootc-box cp /work/app.conf": make_app_conf,
}

# What a user types at a `-it` line: the guest's shell works out 42.
TYPED = {"podman exec -it vm1 bootc-box ssh": "echo readme-$((6*7)); exit\n"}


def readme_block(first: str) -> tuple[str, ...]:
    [block] = [b for b in code_blocks(README.read_text()) if b.first.startswith(first)]
    return block.lines


def shape(shown: str) -> re.Pattern[str]:
    """A pattern for a line the README shows, its numbers standing for any."""
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(shown)))


def says_how_the_vm_came_up(ws: Workspace, line: Line, result: Result) -> None:
    """One line of the run matches one of the summary lines the README shows."""
    shapes = [shape(shown) for shown in readme_block("bootc-box: VM up in")]
    printed = result.stdout.splitlines()
    assert any(s.fullmatch(p.strip()) for s in shapes for p in printed), (
        f"no summary line like the README's {[s.pattern for s in shapes]} in\n{result.stdout}"
    )


def the_shell_worked_out_42(ws: Workspace, line: Line, result: Result) -> None:
    assert "readme-42" in result.stdout, result.stdout


def columns(table: str) -> list[list[str]]:
    """A table's rows, split where two or more spaces part its columns."""
    return [re.split(r"\s{2,}", row.strip()) for row in table.splitlines() if row.strip()]


def lists_the_vms_as_shown(ws: Workspace, line: Line, result: Result) -> None:
    """The table the README shows after `list`: its header, and one row per VM
    with its name and image; states, ports and times vary."""
    shown, printed = columns("\n".join(line.shown)), columns(result.stdout)
    assert printed[0] == shown[0], result.stdout
    assert [row[0] for row in printed[1:]] == [row[0] for row in shown[1:]], result.stdout
    for row in printed[1:]:
        _name, state, image, ssh, created = row
        assert state in ("booting", "running"), result.stdout
        assert image == FIXTURE, result.stdout
        assert re.fullmatch(r"127\.0\.0\.1:\d+", ssh), result.stdout
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created), result.stdout
    lists_the_images_as_shown(ws)


def lists_the_images_as_shown(ws: Workspace) -> None:
    """`bootc-box images` prints the table the README shows: the same
    header, and the fixture's row with the same repository, tag and store."""
    shown = columns("\n".join(readme_block("REPOSITORY")))
    printed = columns(podman("exec", ws.box("lab"), "bootc-box", "images"))
    assert printed[0] == shown[0]
    [fixture] = [row for row in printed if row[:2] == shown[1][:2]]
    _repository, _tag, image_id, kernel, store, created, size = fixture
    assert store == shown[1][4]
    assert re.fullmatch(r"[0-9a-f]{12}", image_id)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", kernel)
    assert re.fullmatch(r"\d+ \w+ ago|Less than a minute ago|Now", created), created
    assert re.fullmatch(r"\d+(\.\d+)? [kMG]B", size), size


def matches_shown_json(shown: object, printed: object, path: str = "") -> None:
    """`"..."` stands for any value, numbers for any number, and a `...`
    after the last key for more keys."""
    if shown == "...":
        return
    if isinstance(shown, dict):
        assert isinstance(printed, dict), path
        for key, value in shown.items():
            assert key in printed, f"{path}.{key} missing"
            matches_shown_json(value, printed[key], f"{path}.{key}")
    elif isinstance(shown, int):
        assert isinstance(printed, int), path
    else:
        assert printed == shown, f"{path}: {printed!r}, not {shown!r}"


def inspect_says_how_to_connect(ws: Workspace, line: Line, result: Result) -> None:
    """`$port` is a port, and `inspect --json` prints what the README shows,
    the key being the one given to --ssh-key."""
    assert re.fullmatch(r"[1-9]\d*", ws.variables["port"]), ws.variables
    shown = json.loads(" ".join(readme_block('{"name": "web"')).replace(", ...}", "}"))
    printed = json.loads(podman("exec", ws.box("vm1"), "bootc-box", "inspect", "--json"))
    assert printed["ssh"]["key"] == str(ws.home / ".ssh/bootc/id_ed25519")
    shown["ssh"]["key"] = "..."
    matches_shown_json(shown, printed)


def completion_loads(ws: Workspace, line: Line, result: Result) -> None:
    script = ws.home / ".local/share/bash-completion/completions/bootc-box"
    loaded = subprocess.run(["bash", "-c", f"source {script}; complete -p bootc-box"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert loaded.stdout.strip() == "complete -o nosort -F _bootc_box_completion bootc-box"


def the_file_is_in_the_guest(ws: Workspace, line: Line, result: Result) -> None:
    copied = podman(
        "exec", ws.box("vm1"), "bootc-box", "ssh", "web", "--", "cat", "/etc/app/app.conf"
    )
    assert copied == "setting = 1"


def the_journal_is_here(ws: Workspace, line: Line, result: Result) -> None:
    assert (ws.work / "journal").is_dir()


CHECKS: dict[str, Callable[[Workspace, Line, Result], None]] = {
    "podman run --rm -it --device /dev/kvm -v bootc-box:/cache": says_how_the_vm_came_up,
    "podman exec -it vm1 bootc-box ssh": the_shell_worked_out_42,
    "podman exec lab bootc-box list": lists_the_vms_as_shown,
    "port=$(podman exec vm1 bootc-box inspect --json": inspect_says_how_to_connect,
    "podman run --rm localhost/bootc-box:latest completion bash": completion_loads,
    "podman exec vm1 bootc-box cp /work/app.conf": the_file_is_in_the_guest,
    "podman exec vm1 bootc-box cp web:/var/log/journal": the_journal_is_here,
}

SCENARIOS = readme_scenarios(README.read_text())


def scenario_param(scenario: Scenario) -> object:
    marks = [pytest.mark.skip(reason=scenario.skip)] if scenario.skip else []
    return pytest.param(scenario, id=f"README.md:{scenario.number}", marks=marks)


@pytest.mark.parametrize("scenario", [scenario_param(s) for s in SCENARIOS])
def test_the_readme_example_runs_as_written(
    scenario: Scenario, warm_volume: CacheVolume, tmp_path: Path
) -> None:
    with workspace(tmp_path, warm_volume, scenario) as ws:
        for line in scenario.lines:
            ws.step(line)
    assert warm_volume.nested_containers() == []
    if ws.expected:
        pytest.xfail("; ".join(ws.expected))


def commands(text: str) -> list[str]:
    """The commands in `text`, each on one line."""
    return [one_line(command) for command in re.split(r"(?<!\\)\n", text)]


def test_every_entry_here_names_a_readme_line() -> None:
    """An entry whose line left the README (fixed, or reworded) must go, and
    so must a correction the README has taken."""
    blocks = code_blocks(README.read_text())
    firsts = [b.first for b in blocks]
    in_blocks = [commands("\n".join(b.lines)) for b in blocks]
    tables: list[Mapping[str, object]] = [NOT_COMMANDS, NEEDS, BUGS, GIVEN, TYPED, CHECKS]
    stale = [
        key
        for table in tables
        for key in table
        if not any(f.startswith(key) for f in firsts)
        and not any(c.startswith(key) for block in in_blocks for c in block)
    ]
    for key, fix in CORRECTIONS.items():
        [block] = [block for block in in_blocks if key in block] or [[]]
        if not block or set(commands(fix.text)) <= set(block):
            stale.append(key)
    assert stale == []
