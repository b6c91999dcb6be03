"""The target image, through podman: find or load it, and mount its root."""

import logging
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError

log = logging.getLogger(__name__)

# Transports whose reference is a path on this machine (containers-transports(5)).
PATH_TRANSPORTS = ("oci-archive", "oci", "docker-archive")
MOUNT_LABEL = "io.bootc-box.mount"


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
        lines = result.stderr.strip().splitlines()
        raise BootcBoxError(f"podman {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result


def resolve_image(ref: ImageRef, env: Environment) -> str:
    """The image's ID in podman's storage, loading it first from a path."""
    if ref.transport:
        if not Path(ref.path).exists():
            raise BootcBoxError(f"{ref.path} does not exist", env.archive_hint(ref.path))
        log.info("Loading %s", ref)
        return podman("pull", "--quiet", str(ref)).stdout.strip().splitlines()[-1]
    if podman("image", "exists", ref.name, check=False).returncode != 0:
        raise BootcBoxError(f"image {ref.name} is not in podman's storage", env.missing_image_hint)
    return podman("image", "inspect", "--format", "{{.Id}}", ref.name).stdout.strip()


@contextmanager
def mount_image(image_id: str) -> Iterator[Path]:
    """The image's root file system, mounted for as long as we need it.

    Images in a read-only additional store cannot be mounted directly
    (`podman image mount` refuses them), so mount a container made from the
    image: its writable layer lives in our own store, and it is never started.
    """
    name = f"bootc-box-{secrets.token_hex(6)}"
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
