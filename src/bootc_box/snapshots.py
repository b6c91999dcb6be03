"""Saved VM states under /cache/snapshots (see cache-layout.md): a VM of one
image and machine shape, saved once it answered SSH and before any user
command ran, that later runs load instead of booting.

An entry holds QEMU's state file, the bootstrap SSH key its guest trusts (a
restored VM is reached with it once, and given the run's own key), the host
key the saved guest shows (that first login checks it), and the credential
files the saving QEMU was started with, so that a restoring QEMU is started
with the very same devices."""

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootc_box import __version__
from bootc_box.cache_entries import (
    Entries,
    cache_dir,
    file_problem,
    manifest_problem,
    open_regular,
    read_manifest,
    read_regular,
    remove_entry,
    write_manifest,
    write_note_once,
)
from bootc_box.credentials import Login, new_login, write_private
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.hostkeys import checked_public_key
from bootc_box.network import Network
from bootc_box.qemu import Accel, QemuSpec, qemu_argv

log = logging.getLogger(__name__)

STATE = "state"
KEY = "id_ed25519"
CREDENTIALS = ("ssh.authorized_keys.root.smbios", "tmpfiles.extra.smbios")
HOST_KEY = "ssh_host_ed25519_key.pub"
# A run's own copy of the key, in its boot attempt's directory.
BOOTSTRAP_KEY = "bootstrap_key"


def snapshot_entries(env: Environment) -> Entries:
    return Entries(cache_dir(env, "snapshots"), creating="save")


def machine_argv(spec: QemuSpec) -> list[str]:
    """The QEMU command line with what differs from run to run (paths under
    the run's directory, host ports) left out: what the guest saw when it was
    saved, and so what a restoring QEMU must give it again."""
    placeholders = dataclasses.replace(
        spec,
        boot=spec.boot.placeholders(),
        network=Network(Path("network.sock"), 0),
        console_log=Path("console.log"),
        credential_files=tuple(Path(f"credential-{i}") for i in range(len(spec.credential_files))),
        shares=tuple((tag, Path(f"{tag}.sock")) for tag, _ in spec.shares),
        ports=tuple((name, Path(f"{name}.sock")) for name, _ in spec.ports),
        # Their content is in the key's versions (provision.Provision.digest).
        fw_cfg=tuple((name, Path(f"fw_cfg-{i}")) for i, (name, _) in enumerate(spec.fw_cfg)),
        qmp_socket=Path("qmp.sock") if spec.qmp_socket else None,
        incoming=False,
        prealloc=False,
        # What QEMU does at a reset, not what the guest sees: a state serves
        # runs that stay up and runs of a command alike.
        reboot=False,
    )
    return qemu_argv(placeholders, "qemu")


def snapshot_key(image_id: str, spec: QemuSpec, versions: dict[str, str]) -> str:
    """What a saved state can be loaded for: the same image (its ID names
    its content), the same machine, and the same QEMU, virtiofsd and
    bootc-box (a state's format is theirs)."""
    text = json.dumps([image_id, machine_argv(spec), sorted(versions.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def program_version(argv: list[str]) -> str:
    """The first line a program prints for --version ("" if it printed none)."""
    result = subprocess.run(
        [*argv, "--version"], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def host_cpu_flags(cpuinfo: str) -> str:
    """A digest of the host CPU's feature flags, from /proc/cpuinfo's text."""
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return hashlib.sha256(flags.encode()).hexdigest()[:16]


def program_versions(qemu: str, virtiofsd: Path, accel: Accel) -> dict[str, str]:
    """Whatever a saved state's format or content depends on outside the
    guest: the programs that wrote it and, under KVM (`-cpu host`), the
    host CPU's features the guest was shown."""
    versions = {
        "qemu": program_version([qemu]),
        "virtiofsd": program_version([str(virtiofsd)]),
        "bootc-box": __version__,
    }
    if accel is Accel.KVM:
        versions["host-cpu"] = host_cpu_flags(Path("/proc/cpuinfo").read_text())
    return versions


@dataclass(frozen=True)
class Manifest:
    key: str
    image_id: str
    image: str
    memory_mib: int
    cpus: int
    cmdline: str
    versions: dict[str, str]
    state_size: int
    created: str
    # bootc-box's unit was saved waiting for a command (serial_exec.py).
    agent: bool = False


@dataclass(frozen=True)
class Snapshot:
    """An entry to load: its files, stable while its use lock is held."""

    directory: Path

    @property
    def state(self) -> Path:
        return self.directory / STATE

    @property
    def key(self) -> Path:
        return self.directory / KEY

    @property
    def credentials(self) -> tuple[Path, ...]:
        return tuple(self.directory / name for name in CREDENTIALS)

    @property
    def host_key(self) -> Path:
        return self.directory / HOST_KEY

    @property
    def agent(self) -> bool:
        """Whether the guest was saved with bootc-box's unit waiting for a
        command; a manifest that cannot be read says no."""
        try:
            return read_manifest(self.directory, Manifest).agent
        except (OSError, ValueError, TypeError):
            return False

    def copy_out(self, workdir: Path) -> Login:
        """The credentials and the bootstrap key, copied into `workdir` for
        QEMU and ssh (copies no writer of the cache can swap for a link), and
        the saved guest's host key, checked before ssh is told it."""
        read = [(c.name, read_regular(c)) for c in self.credentials]
        key = read_regular(self.key)
        try:
            host_key = checked_public_key(read_regular(self.host_key).decode(errors="replace"))
        except BootcBoxError as e:
            raise OSError(f"{self.host_key}: {e.message}") from None
        credentials = tuple(write_private(workdir / f"saved.{n}", data) for n, data in read)
        return Login(write_private(workdir / BOOTSTRAP_KEY, key), credentials, host_key)


def entry_problem(entry: Path, key: str) -> str | None:
    """Why the entry cannot be loaded, or None when it looks whole. (A state
    file damaged inside is for QEMU to find: loading it fails, and the run
    boots cold.)"""
    manifest = manifest_problem(entry, Manifest)
    if isinstance(manifest, str):
        return manifest
    if manifest.key != key:
        return "its manifest is for another machine"
    snapshot = Snapshot(entry)
    files = (snapshot.key, *snapshot.credentials, snapshot.host_key, snapshot.state)
    problems = [f"{p.name} is {problem}" for p in files if (problem := file_problem(p))]
    if problems:
        return ", ".join(problems)
    try:
        checked_public_key(read_regular(snapshot.host_key).decode(errors="replace"))
    except BootcBoxError:
        return f"{HOST_KEY} holds no ed25519 host key"
    size = snapshot.state.stat().st_size
    if size != manifest.state_size:
        return f"its state file has {size} bytes, not the {manifest.state_size} saved"
    return None


@contextmanager
def find_snapshot(env: Environment, key: str) -> Iterator[Snapshot | None]:
    """The saved state of `key`, held against deletion until the block ends
    (the caller ends it once QEMU has loaded it); None when there is none, or
    none that can be loaded (then it is deleted, unless a run reads it)."""
    damaged = "The saved state %s cannot be loaded (%s); booting cold"
    with snapshot_entries(env).find(key, entry_problem, damaged) as entry:
        yield None if entry is None else Snapshot(entry)


def discard_snapshot(env: Environment, key: str) -> None:
    """Delete an entry that failed to load, once no other run is loading it."""
    snapshot_entries(env).delete(key, timeout=0)


class NewSnapshot:
    """A partial entry being made by the one run that saves `key`: its
    bootstrap key, host key and credentials first, the state once the guest
    is up."""

    def __init__(self, entries: Entries, key: str, partial: Path, held: ExitStack) -> None:
        self.entries, self.name, self.partial, self.held = entries, key, partial, held
        # Its files are the entry's KEY and CREDENTIALS.
        self.login = new_login(partial)

    @property
    def state(self) -> Path:
        return self.partial / STATE

    def commit(
        self,
        image_id: str,
        image: str,
        spec: QemuSpec,
        versions: dict[str, str],
        host_key: str,
        *,
        agent: bool = False,
    ) -> Path:
        """Put the entry in place for the next runs, with the host key the
        saved guest showed and whether its `agent` waits; returns the entry
        (the bootstrap key has moved with it)."""
        (self.partial / HOST_KEY).write_text(checked_public_key(host_key) + "\n")
        manifest = Manifest(
            key=self.name,
            image_id=image_id,
            image=image,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            cmdline=spec.boot.cmdline,
            versions=versions,
            state_size=self.state.stat().st_size,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            agent=agent,
        )
        write_manifest(self.partial, manifest)
        entry = self.entries.commit(self.partial, self.name)
        self.held.close()  # another run may now save this key again, if it must
        return entry

    def abandon(self) -> None:
        """Give up: the partial entry goes, and another run may save the key."""
        self.held.close()


@contextmanager
def new_snapshot(env: Environment, key: str) -> Iterator[NewSnapshot | None]:
    """A partial entry to save `key` into, or None when another run is saving
    it now (this run then boots without saving: waiting would take as long)."""
    entries = snapshot_entries(env)
    with ExitStack() as held:
        fd = entries.lock(entries.create_lock(key), fcntl.LOCK_EX, timeout=0)
        if fd is None:
            yield None
            return
        held.callback(os.close, fd)
        entries.remove_partial(key)
        entry = entries.entry(key)
        if entry.exists() and (
            entry_problem(entry, key) is None  # saved whole meanwhile
            or not entries.delete(key, timeout=0, only_if=lambda: entry_problem(entry, key))
        ):
            yield None  # or a run is loading the old entry: leave it be
            return
        partial = held.enter_context(entries.partial(key))
        yield NewSnapshot(entries, key, partial, held)


def list_snapshots(env: Environment) -> list[tuple[Manifest, int]]:
    """Every whole entry's manifest and its size on disk (the state file is sparse)."""
    return [
        (read_manifest(e, Manifest), used) for e, used in snapshot_entries(env).whole(entry_problem)
    ]


PROGRAMS = ("qemu", "virtiofsd", "bootc-box")


def prune_snapshots(
    env: Environment, keep_images: set[str], versions: dict[str, str] | None = None
) -> int:
    """Remove the entries of images no longer in any store, those saved by
    other versions of the programs (`versions`: this box's; no run of it
    could load them), and entries that cannot be read; skipping any a run is
    loading or saving."""
    entries = snapshot_entries(env)

    def doomed(key: str) -> bool:
        try:
            manifest = read_manifest(entries.entry(key), Manifest)
        except (OSError, ValueError, KeyError, TypeError):
            return True
        if manifest.image_id not in keep_images:
            return True
        return versions is not None and any(
            manifest.versions.get(p) != versions.get(p) for p in PROGRAMS
        )

    return entries.prune(doomed)


# A note per machine booted without saving: its next cold boot saves.
SEEN = "seen"


def seen_before(env: Environment, key: str, image_id: str) -> bool:
    """Whether a run of this machine (the key of its saved state) came this
    way before; notes this one. The note holds the image's ID for prune. A
    note planted in a shared cache costs a save at most."""
    directory = cache_dir(env, SEEN)
    directory.mkdir(parents=True, exist_ok=True)
    return not write_note_once(directory / key, image_id.encode())


def prune_seen(env: Environment, keep_images: set[str]) -> int:
    """Remove the notes of images no longer in any store, and anything in
    their directory that is not one."""
    directory = cache_dir(env, SEEN)
    removed = 0
    for path in directory.iterdir() if directory.is_dir() else ():
        try:
            # A note holds an image ID: a planted big file is not read whole.
            with open_regular(path) as note:
                doomed = note.read(200).decode() not in keep_images
        except (OSError, UnicodeDecodeError):
            doomed = True
        if doomed:
            remove_entry(path)
            removed += 1
    return removed
