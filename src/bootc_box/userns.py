"""Native mode without root. Rootless podman mounts an image only inside
its own user namespace (what `podman unshare` enters), and the mount is
seen only there: so a command that mounts images re-runs itself there,
with virtiofsd and QEMU as its children. Inside, this user is root over
the ids podman was given (/etc/subuid), which is what lets virtiofsd serve
the image's files with their own owners."""

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from bootc_box.environment import (
    PODMAN_USERNS_VARIABLE,
    RUNTIME_DIR_VARIABLE,
    Environment,
    runtime_dir,
)
from bootc_box.programs import not_installed


def needs_podman_userns(env: Environment, euid: int, environ: Mapping[str, str]) -> bool:
    return not env.in_box and euid != 0 and PODMAN_USERNS_VARIABLE not in environ


def podman_unshare_argv(podman: str, python: str, args: Sequence[str]) -> list[str]:
    return [podman, "unshare", python, "-m", "bootc_box", *args]


def enter_podman_userns(env: Environment) -> None:
    """Re-run this command in rootless podman's user namespace, if it must."""
    if not needs_podman_userns(env, os.geteuid(), os.environ):
        return
    podman = shutil.which("podman")
    if podman is None:
        raise not_installed("podman")
    os.environ[RUNTIME_DIR_VARIABLE] = str(runtime_dir(env))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(podman, podman_unshare_argv(podman, sys.executable, sys.argv[1:]))
