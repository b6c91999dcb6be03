"""How a run brings its guest up: restored from a saved state of its
machine, or booted cold and saved for the runs after it (see snapshots.py
for the entries, migration.py for saving and loading)."""

import dataclasses
import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bootc_box.credentials import Login, write_private
from bootc_box.environment import Environment
from bootc_box.snapshots import (
    BOOTSTRAP_KEY,
    NewSnapshot,
    Snapshot,
    find_snapshot,
    new_snapshot,
    seen_before,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """How one boot attempt brings its guest up: booted, or loaded from a
    saved state, and saved once up or not."""

    # What QEMU hands the guest, the key it lets in first, the host key it shows first.
    login: Login
    restore: Snapshot | None = None
    # Called once QEMU has loaded the state: lets go of its cache entry.
    loaded: Callable[[], None] = lambda: None
    save: NewSnapshot | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "restored" if self.restore else "cold"


@dataclass(frozen=True)
class Warm:
    """What a run may do with saved states: the key of its machine, and
    whether it may still restore (not after a failed restore)."""

    key: str
    versions: dict[str, str]
    image_id: str
    restore: bool = True
    # Save after this machine's first boot too, not only once it was booted before.
    eager: bool = False


@contextmanager
def choose_start(
    env: Environment, cold: Start, warm: Warm | None, workdir: Path
) -> Iterator[Start]:
    """A restore when a saved state of this machine is there; else a cold
    boot that saves one, unless another run is saving it just now. A cache
    that cannot be used (full, read-only) means a cold boot, never a failure."""
    with ExitStack() as held:
        start = None
        if warm is not None:
            try:
                start = warm_start(held, env, warm, workdir)
            except (OSError, subprocess.CalledProcessError) as e:
                log.warning("cannot use the saved VM states in the cache (%s); booting cold", e)
                held.close()
        yield start or cold


def warm_start(held: ExitStack, env: Environment, warm: Warm, workdir: Path) -> Start | None:
    """The start from, or for, a saved state, its locks on `held`. The run
    logs in with its own copy of the bootstrap key: the entry may be deleted
    once QEMU has loaded it."""
    if warm.restore:
        loading = held.enter_context(ExitStack())
        snapshot = loading.enter_context(find_snapshot(env, warm.key))
        if snapshot:
            return Start(snapshot.copy_out(workdir), snapshot, loading.close)
        loading.close()
    if not warm.eager and not seen_before(env, warm.key, warm.image_id):
        log.info(
            "The first boot of this image and machine: the next run saves its state for the"
            " runs after it (--warm always saves it now)"
        )
        return None
    new = held.enter_context(new_snapshot(env, warm.key))
    if new:
        # The run's own copy of the key: the entry may be deleted once saved.
        key = write_private(workdir / BOOTSTRAP_KEY, new.login.key.read_bytes())
        login = dataclasses.replace(new.login, key=key)
        return Start(login, save=new, versions=warm.versions)
    return None
