"""End-to-end harness: real podman runs of the box image, booting real VMs."""

import base64
import contextlib
import json
import os
import secrets
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootc_box.network import free_port

ROOT = Path(__file__).resolve().parents[2]
BOX = "localhost/bootc-box:latest"
FIXTURE = "localhost/bootc-box-fixture:latest"
TWO_KERNELS = "localhost/bootc-box-two-kernels:latest"
INSTALLABLE = "localhost/bootc-box-installable:latest"
UKI = "localhost/bootc-box-uki:latest"
BAD_UKI = "localhost/bootc-box-bad-uki:latest"
CLOUD_INIT = "localhost/bootc-box-cloud-init:latest"
NO_KERNEL = "localhost/debian:trixie"
HOST_STORE = "/var/lib/containers/storage:/var/lib/containers/host-storage:ro"
BOOT_DEADLINE = 900.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest hands this hook every collected item, the unit tests' too.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def images() -> None:
    """Every image the tests boot, built offline (a no-op when up to date)."""
    subprocess.run([ROOT / "ci/build-images"], check=True)


def box_argv(
    *args: str,
    volume: str | None = None,
    privileged: bool = False,
    options: tuple[str, ...] = (),
) -> list[str]:
    """The README's line: only --device /dev/kvm, plus what the test asks for."""
    argv = ["podman", "run", "--device", "/dev/kvm", "-v", HOST_STORE]
    if privileged:
        argv.append("--privileged")
    if volume:
        argv += ["-v", f"{volume}:/cache"]
    return [*argv, *options, BOX, *args]


def in_box(container: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """bootc-box ARGS in a running box, as `podman exec BOX bootc-box` runs it."""
    return subprocess.run(
        ["podman", "exec", container, "bootc-box", *args],
        capture_output=True, text=True, check=False, timeout=BOOT_DEADLINE,
    )  # fmt: skip


@contextmanager
def long_lived_box(
    volume: "CacheVolume", purpose: str, options: tuple[str, ...] = ()
) -> Iterator[str]:
    """A box whose command is `sleep infinity`, for `podman exec BOX
    bootc-box ...`: its container's name; removed with all it runs."""
    name = f"bootc-box-test-{purpose}-{time.monotonic_ns()}"
    argv = box_argv(
        "sleep", "infinity", volume=volume.name, options=("-d", "--name", name, *options)
    )
    subprocess.run(argv, check=True, capture_output=True)
    try:
        yield name
    finally:
        # bootc-box removes what a test left running (its image mounts on
        # the shared volume too), so that one failure is not also every
        # later test's that checks the volume is clean.
        remove_vms = ["podman", "exec", name, "bootc-box", "rm", "--force", "--all", "--time", "10"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(remove_vms, check=False, capture_output=True, timeout=120)
        subprocess.run(["podman", "rm", "--force", "--time", "0", name],
                       check=False, capture_output=True)  # fmt: skip


def podman(*args: str) -> str:
    return subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass(frozen=True)
class CacheVolume:
    name: str

    @property
    def path(self) -> Path:
        return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", self.name))

    def nested_containers(self) -> list[object]:
        """Containers the box's nested podman left in its store on the volume."""
        listing = self.path / "storage/overlay-containers/containers.json"
        return json.loads(listing.read_text()) if listing.exists() else []

    def leftovers(self) -> list[str]:
        """Anything on the volume but the store, whole boot-file, saved-state,
        disk, installer-store and VM entries, their locks, the notes of
        machines booted once, the KVM probe's verdicts, and an empty run-lock
        directory."""
        entries = ("boot", "snapshots", "disks", "install-stores", "vms")
        kept = ("storage", "runs", "seen", "kvm", *entries)
        found = [p.name for p in self.path.iterdir() if p.name not in kept]
        runs = self.path / "runs"
        found += [f"runs/{p.name}" for p in runs.iterdir()] if runs.exists() else []
        for kind in entries:  # partial entries start with a dot
            found += [f"{kind}/{p.name}" for p in (self.path / kind).glob(".*")]
        return [f for f in found if f != "vms/.making.lock"]  # a lock, never removed

    def snapshots(self) -> list[Path]:
        """The whole saved-state entries on the volume."""
        directory = self.path / "snapshots"
        if not directory.exists():
            return []
        return sorted(p for p in directory.iterdir() if p.is_dir() and p.name[0] != ".")


@pytest.fixture
def tmt_run_dir() -> Iterator[Path]:
    """Where one tmt run keeps its files, on a short path as tmt's default
    is (/var/tmp/tmt/run-NNN): on one longer than 84 bytes, tmt would make
    no SSH master connection whatever its plugin says."""
    directory = Path(tempfile.mkdtemp(prefix="tmt-"))
    try:
        yield directory / "run"
    finally:
        subprocess.run(["rm", "-rf", directory], check=False)


@contextmanager
def new_cache_volume() -> Iterator[CacheVolume]:
    name = f"bootc-box-test-{secrets.token_hex(4)}"
    podman("volume", "create", name)
    try:
        yield CacheVolume(name)
    finally:
        podman("volume", "rm", "--force", name)


@contextmanager
def seeded_cache_volume(boot: "Boot") -> Iterator[CacheVolume]:
    """A new /cache that holds a copy of the state the session's cold boot
    saved (as a volume another host's box used would): runs of the fixture
    (or of a copy of it pulled from elsewhere, the same image) there restore
    it, where the test is not about booting."""
    [saved] = boot.snapshots
    with new_cache_volume() as volume:
        snapshots = volume.path / "snapshots"
        snapshots.mkdir()
        snapshots.chmod(saved.parent.stat().st_mode & 0o7777)
        subprocess.run(["cp", "-a", "--sparse=always", saved, snapshots], check=True)
        yield volume


@pytest.fixture
def cache_volume() -> Iterator[CacheVolume]:
    with new_cache_volume() as volume:
        yield volume


# The session's cold boot (test_run.py's assertions): prints what the tests
# check, then blocks on stdin, so the test sees the first lines while the
# command still runs, which is what streaming means. Its writes come after
# the VM was saved: no restore may see them (test_warm.py).
GUEST_SCRIPT = """
echo "kernel=$(uname -r)"
echo "marker=$(cat /usr/share/bootc-box-fixture-marker)"
touch /etc/bootc-box-e2e && touch /var/bootc-box-e2e && echo "writable=yes"
echo "waiting-for-input"
read -r line
echo "input=$line"
exit 7
"""
GUEST_WRITES = ("/etc/bootc-box-e2e", "/var/bootc-box-e2e")


@dataclass(frozen=True)
class Boot:
    volume: "CacheVolume"
    before_input: str
    after_input: str
    stderr: str
    returncode: int
    host_before: "HostState"
    host_after: "HostState"
    # The volume's saved states, and anything else it held, right after the run.
    snapshots: tuple[Path, ...]
    leftovers: tuple[str, ...]

    def value(self, key: str) -> str:
        for line in self.before_input.splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1].strip()
        raise AssertionError(f"{key}= not in the guest's output: {self.before_input!r}")


@pytest.fixture(scope="session")
def first_boot() -> Iterator[Boot]:
    """The session's one cold boot of the fixture on a fresh volume, as the
    README's line runs it (default capabilities, no --privileged), saving its
    state at once (--warm always): test_run.py asserts on it, and the state
    serves every test not about booting (`warm_volume`)."""
    host_before = host_state()
    with new_cache_volume() as volume, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            box_argv("run", "--warm", "always", FIXTURE, "--", "sh", "-c", GUEST_SCRIPT,
                     volume=volume.name, options=("--rm", "-i")),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            before = read_until(
                proc.stdout.fileno(), b"waiting-for-input", time.monotonic() + BOOT_DEADLINE
            )
            after, _ = proc.communicate(b"hello-from-the-test\n", timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        yield Boot(
            volume,
            before.decode(),
            after.decode(),
            stderr.read().decode(),
            proc.returncode,
            host_before,
            host_state(),
            tuple(volume.snapshots()),
            tuple(volume.leftovers()),
        )


@pytest.fixture(scope="session")
def warm_volume(first_boot: Boot) -> CacheVolume:
    """A /cache that holds the fixture's saved VM (default machine): tests
    that are not about booting restore it in seconds, as users' runs do
    after their first."""
    assert first_boot.returncode == 7, first_boot.stderr
    assert len(first_boot.snapshots) == 1, first_boot.stderr
    return first_boot.volume


@dataclass(frozen=True)
class HostState:
    processes: frozenset[str]
    containers: frozenset[str]
    mounts: frozenset[str]


def host_state() -> HostState:
    """What a run could leave behind on the host: helpers, containers, mounts."""
    processes = subprocess.run(
        ["pgrep", "-a", "-f", "qemu-system|virtiofsd"], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return HostState(
        frozenset(p for p in processes if p),
        frozenset(podman("ps", "-a", "--format", "{{.ID}}").split()),
        frozenset(m.split()[4] for m in mounts),
    )


def assert_refused_cleanly(argv: list[str], message: str, volume: CacheVolume) -> None:
    """A run of `argv` fails with one error line that starts with `message`,
    exit 125, and leaves nothing behind: no container in the nested store,
    nothing on the volume but whole entries, nothing new on the host. Well
    inside --timeout's 600 s: a run that waits it out fails."""
    before = host_state()
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 125
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(message)
    assert "Traceback" not in result.stderr
    assert volume.nested_containers() == []
    assert volume.leftovers() == []
    after = host_state()
    assert after.processes <= before.processes
    assert after.containers <= before.containers
    assert after.mounts <= before.mounts


def read_until(fd: int, marker: bytes, deadline: float, times: int = 1) -> bytes:
    """Read `fd` until `marker` shows (`times` times), the writer is gone, or time is up."""
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while seen.count(marker) < times:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise AssertionError(f"no {marker!r} before the deadline; got {seen[-2000:]!r}")
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty whose other side closed reads as EIO
                chunk = b""
            if not chunk:
                raise AssertionError(f"output ended before {marker!r}; got {seen[-2000:]!r}")
            seen += chunk
    return seen


def container_logs(container: str) -> str:
    """`podman logs`, the container's stdout and stderr together."""
    return subprocess.run(
        ["podman", "logs", container],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True,
    ).stdout  # fmt: skip


def wait_for_log(container: str, text: str, deadline: float, times: int = 1) -> None:
    """Follow `podman logs` until `text` appears, `times` times in all the
    container's runs (instead of sleeping)."""
    with subprocess.Popen(
        ["podman", "logs", "--follow", container],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as logs:
        assert logs.stdout is not None
        try:
            read_until(logs.stdout.fileno(), text.encode(), deadline, times)
        finally:
            logs.kill()


def host_address() -> str | None:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
        return address


@contextmanager
def serve_secret(address: str) -> Iterator[tuple[int, bytes]]:
    """A TCP service on `address` that writes a fresh secret to whoever
    connects: a guest that prints the secret reached it."""
    secret = secrets.token_hex(8).encode()
    with socket.create_server((address, 0)) as server:
        server.settimeout(0.5)
        done = threading.Event()

        def serve() -> None:
            while not done.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.sendall(secret + b"\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1], secret
        finally:
            done.set()
            thread.join()


def guest_reads_tcp(address: str, port: int) -> str:
    """A guest shell command that prints what a TCP service at
    `address:port` sends, giving up after 10 s."""
    return f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port} && cat <&3'"


@dataclass(frozen=True)
class Registry:
    """Debian's docker-registry on loopback, serving TLS with a self-signed
    certificate, holding the fixture as bootc/fixture:latest."""

    address: str
    ca_dir: Path  # holds ca.crt, the layout --cert-dir and certs.d expect

    @property
    def fixture(self) -> str:
        return f"{self.address}/bootc/fixture:latest"


REGISTRY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}/data
http:
  addr: {address}
  tls:
    certificate: {root}/ca/ca.crt
    key: {root}/key.pem
"""
HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: bootc-box-test
    path: {root}/htpasswd
"""


@contextmanager
def serve_registry(root: Path, name: str, config: str) -> Iterator[Registry]:
    """One docker-registry process over the storage and certificate in `root`."""
    address = f"127.0.0.1:{free_port()}"
    (root / f"{name}.yml").write_text(config.format(root=root, address=address))
    with (
        (root / f"{name}.log").open("wb") as log,
        subprocess.Popen(
            ["docker-registry", "serve", root / f"{name}.yml"], stdout=log, stderr=log
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 30
            while server.poll() is None and time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", int(address.split(":")[1]))) == 0:
                        break
                time.sleep(0.1)
            else:
                raise AssertionError(
                    f"registry did not listen: {(root / f'{name}.log').read_text()}"
                )
            yield Registry(address, root / "ca")
        finally:
            server.terminate()


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    (root / "ca").mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=bootc-box test registry", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", root / "key.pem", "-out", root / "ca/ca.crt"],
        check=True, capture_output=True,
    )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def registry(registry_root: Path) -> Iterator[Registry]:
    with serve_registry(registry_root, "open", REGISTRY_CONFIG) as reg:
        podman("push", "--quiet", "--tls-verify=false", FIXTURE, reg.fixture)
        yield reg


@dataclass(frozen=True)
class AuthRegistry:
    registry: Registry
    authfile: Path  # podman login's format, for the one user htpasswd knows


@pytest.fixture(scope="session")
def auth_registry(registry: Registry, registry_root: Path) -> Iterator[AuthRegistry]:
    """A second server over the same storage that wants a login."""
    password = secrets.token_urlsafe(16)
    # -i: the password comes on stdin, never on a command line.
    htpasswd = subprocess.run(
        ["htpasswd", "-inB", "tester"], input=password, capture_output=True, text=True, check=True
    ).stdout
    (registry_root / "htpasswd").write_text(htpasswd)
    with serve_registry(registry_root, "auth", REGISTRY_CONFIG + HTPASSWD_AUTH) as reg:
        token = base64.b64encode(f"tester:{password}".encode()).decode()
        authfile = registry_root / "auth.json"
        authfile.write_text(json.dumps({"auths": {reg.address: {"auth": token}}}))
        authfile.chmod(0o600)
        yield AuthRegistry(reg, authfile)
