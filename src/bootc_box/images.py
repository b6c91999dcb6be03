"""The target image, through podman: find or load it, and mount its root."""

import enum
import functools
import logging
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.environment import CACHE, Environment
from bootc_box.errors import BootcBoxError
from bootc_box.locks import hold_mount_lock
from bootc_box.processes import last_line_of

log = logging.getLogger(__name__)

# Transports whose reference is a path on this machine (containers-transports(5)).
PATH_TRANSPORTS = ("oci-archive", "oci", "docker-archive")
MOUNT_LABEL = "io.bootc-box.mount"
NO_MESSAGE = "no message"


@dataclass(frozen=True)
class ImageRef:
    name: str
    transport: str | None = None

    @property
    def path(self) -> str:
        """The file or directory of a path transport (an optional `:ref` follows it)."""
        return self.name.split(":", 1)[0]

    def __str__(self) -> str:
        return f"{self.transport}:{self.name}" if self.transport else self.name


def parse_image_ref(text: str) -> ImageRef:
    if not text:
        raise BootcBoxError("no image given", "name an image, e.g. quay.io/fedora/fedora-bootc:42")
    for transport in PATH_TRANSPORTS:
        prefix = f"{transport}:"
        if text.startswith(prefix):
            if not text[len(prefix) :]:
                raise BootcBoxError(f"{text!r} names no path", f"write {prefix}PATH")
            return ImageRef(text[len(prefix) :], transport)
    return ImageRef(text)


def podman(*args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    log.debug("podman %s", " ".join(args))
    result = subprocess.run(
        ["podman", *args], check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise BootcBoxError(f"podman {args[0]} failed: {last_line_of(result.stderr, NO_MESSAGE)}")
    return result


class PullPolicy(enum.Enum):
    """When to pull, as podman run's --pull."""

    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"
    NEWER = "newer"


@dataclass(frozen=True)
class PullOptions:
    policy: PullPolicy = PullPolicy.MISSING
    # None: podman decides, which is to verify unless registries.conf marks
    # the registry (or its mirror) insecure.
    tls_verify: bool | None = None
    cert_dir: Path | None = None
    authfile: Path | None = None


def pull_argv(ref: ImageRef, options: PullOptions) -> list[str]:
    """podman pull arguments. Credentials stay in the auth file: only its path
    is on the command line."""
    argv = ["pull"]
    if options.tls_verify is not None:
        argv.append(f"--tls-verify={str(options.tls_verify).lower()}")
    if options.cert_dir:
        argv += ["--cert-dir", str(options.cert_dir)]
    if options.authfile:
        argv += ["--authfile", str(options.authfile)]
    return [*argv, str(ref)]


# What podman says when a pull fails (any of the markers), and what the user
# can do about it.
_PULL_FAILURES = (
    (("x509:",), "the registry's TLS certificate is not trusted",
     "pass the registry's CA with --cert-dir DIR (DIR/ca.crt), or --tls-verify=false"),
    (("authentication required", "unauthorized"), "the registry wants credentials",
     "log in with podman login and pass --authfile FILE (or set REGISTRY_AUTH_FILE)"),
    (("manifest unknown",), "the registry has no such image or tag", "check the name and tag"),
    (("connection refused",), "the registry is not reachable",
     "check the address, or mirror it in registries.conf"),
)  # fmt: skip


def pull_failure(ref: ImageRef, podman_message: str) -> BootcBoxError:
    for markers, what, hint in _PULL_FAILURES:
        for marker in markers:
            at = podman_message.find(marker)
            if at >= 0:
                return BootcBoxError(f"cannot pull {ref}: {what} ({podman_message[at:]})", hint)
    return BootcBoxError(f"cannot pull {ref}: {podman_message}")


# Called with each line podman prints while it pulls (its layer progress).
OnOutput = Callable[[str], None]


def podman_pull(argv: list[str], on_output: OnOutput) -> "subprocess.CompletedProcess[str]":
    """`podman pull ...`, its progress lines passed on as they come; the
    image ID is the last line of its stdout."""
    log.debug("podman %s", " ".join(argv))
    proc = subprocess.Popen(
        ["podman", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stdout is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        on_output(line.strip())
    stdout = proc.stdout.read()
    return subprocess.CompletedProcess(argv, proc.wait(), stdout, "".join(lines))


def ignore_output(line: str) -> None:
    del line


def pull_image(ref: ImageRef, options: PullOptions, on_output: OnOutput = ignore_output) -> str:
    for path, flag in ((options.cert_dir, "--cert-dir"), (options.authfile, "--authfile")):
        if path is not None and not path.exists():
            raise BootcBoxError(f"{flag} {path} does not exist", "mount it into the box with -v")
    log.info("Pulling %s", ref)
    result = podman_pull(pull_argv(ref, options), on_output)
    if result.returncode != 0:
        raise pull_failure(ref, last_line_of(result.stderr, NO_MESSAGE).removeprefix("Error: "))
    return result.stdout.strip().splitlines()[-1]


def local_image_id(name: str) -> str | None:
    if podman("image", "exists", name, check=False).returncode != 0:
        return None
    return podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()


def check_archive(ref: ImageRef, env: Environment) -> None:
    """An archive or layout named by path must be there (in the box: mounted)."""
    if ref.transport and not Path(ref.path).exists():
        raise BootcBoxError(f"{ref.path} does not exist", env.archive_hint(ref.path))


def resolve_image(
    ref: ImageRef, env: Environment, options: PullOptions, on_output: OnOutput = ignore_output
) -> str:
    """The image's ID in podman's storage, pulled or loaded as the policy says."""
    if ref.transport:
        check_archive(ref, env)
        log.info("Loading %s", ref)
        loaded = podman_pull(["pull", str(ref)], on_output)
        if loaded.returncode != 0:
            raise BootcBoxError(f"cannot load {ref}: {last_line_of(loaded.stderr, NO_MESSAGE)}")
        return loaded.stdout.strip().splitlines()[-1]
    local = None if options.policy is PullPolicy.ALWAYS else local_image_id(ref.name)
    if options.policy is PullPolicy.NEVER and local is None:
        raise BootcBoxError(
            f"image {ref.name} is not in podman's storage and --pull=never", env.missing_image_hint
        )
    if local is not None and options.policy in (PullPolicy.MISSING, PullPolicy.NEVER):
        return local
    try:
        return pull_image(ref, options, on_output)
    except BootcBoxError as e:
        if options.policy is PullPolicy.NEWER and local is not None:
            log.warning("%s; using the local copy", e.message)
            return local
        raise


def run_pull(image: str, options: PullOptions) -> int:
    """`bootc-box pull`: fetch an image into the box's store (/cache)."""
    ref = parse_image_ref(image)
    image_id = pull_image(ref, options)
    print(image_id)
    return 0


@functools.cache
def _store_run_root() -> Path:
    return Path(podman("info", "--format", "{{.Store.RunRoot}}").stdout.strip())


def mount_locks_dir(env: Environment) -> Path:
    """Where live runs hold their locks: with the store whose mount containers
    they protect. In the box that is the volume, so every box sharing it sees
    them; natively, the store's run directory, whatever session (and
    XDG_RUNTIME_DIR) each run has."""
    return CACHE / "runs" if env.in_box else _store_run_root() / "bootc-box-runs"


@contextmanager
def mount_image(image_id: str, env: Environment) -> Iterator[Path]:
    """The image's root file system, mounted for as long as we need it.

    Images in a read-only additional store cannot be mounted directly
    (`podman image mount` refuses them), so mount a container made from the
    image: its writable layer lives in our own store, and it is never started.
    """
    name = f"bootc-box-{secrets.token_hex(6)}"
    with hold_mount_lock(mount_locks_dir(env), name), _mount_container(name, image_id) as root:
        yield root


@contextmanager
def _mount_container(name: str, image_id: str) -> Iterator[Path]:
    podman("create", "--name", name, "--label", f"{MOUNT_LABEL}=1", "--network", "none",
           image_id, "true")  # fmt: skip
    try:
        root = Path(podman("mount", name).stdout.strip())
        try:
            yield root
        finally:
            podman("umount", name, check=False)
    finally:
        podman("rm", "--force", name, check=False)
