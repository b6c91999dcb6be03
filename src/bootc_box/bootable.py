"""`bootc-box images`: the images here that bootc-box can boot."""

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bootc_box.boot_cache import find_cached_kernel
from bootc_box.cache import CachedImage, list_images
from bootc_box.environment import Environment
from bootc_box.errors import BootcBoxError
from bootc_box.images import mount_image
from bootc_box.kernel import Kernel, image_kernels
from bootc_box.table import format_table
from bootc_box.userns import enter_podman_userns

log = logging.getLogger(__name__)

# What bootc's base images carry, and what `bootc container lint` expects.
BOOTC_LABELS = ("containers.bootc", "ostree.bootable")


@dataclass(frozen=True)
class BootableImage:
    image: CachedImage
    kernels: tuple[Kernel, ...]

    @property
    def labelled(self) -> bool:
        return any(self.image.labels.get(label) in ("1", "true") for label in BOOTC_LABELS)


def find_kernels(env: Environment, image: CachedImage) -> tuple[Kernel, ...]:
    """The kernels in the image: the cached boot files' when it has booted
    here before, else what a mount of it shows."""
    cached = find_cached_kernel(env, image.image_id)
    if cached is not None:
        return (cached,)
    try:
        with mount_image(image.image_id, env) as root:
            return tuple(image_kernels(root))
    except BootcBoxError as e:  # one image we cannot look into must not hide the rest
        log.warning("cannot look into %s: %s", image.names[0], e)
        return ()


def bootable_images(env: Environment) -> list[BootableImage]:
    found = (BootableImage(i, find_kernels(env, i)) for i in list_images())
    return [b for b in found if b.kernels or b.labelled]


def split_name(name: str) -> tuple[str, str]:
    """`registry/repo:tag` as podman's REPOSITORY and TAG columns."""
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:  # a port, not a tag (localhost:5000/repo)
        return name, "<none>"
    return repository, tag


def ago(created: int, now: float) -> str:
    """How long ago, in podman's words."""
    seconds = max(0, int(now - created))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago" if seconds else "Now"


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def render_bootable(images: list[BootableImage], now: float) -> str:
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "KERNEL", "STORE", "CREATED", "SIZE")]
    for b in images:
        kernel = ", ".join(map(str, b.kernels)) or "-"
        for name in b.image.names:
            repository, tag = split_name(name)
            rows.append((repository, tag, b.image.image_id[:12], kernel, b.image.store,
                         ago(b.image.created, now), human_size(b.image.size)))  # fmt: skip
    return format_table(rows)


def describe_bootable(b: BootableImage) -> dict[str, object]:
    return {
        "names": list(b.image.names),
        "id": b.image.image_id,
        "kernels": [k.kver for k in b.kernels],
        "uki": any(k.uki for k in b.kernels),
        "bootc_label": b.labelled,
        "store": b.image.store,
        "size": b.image.size,
        "created": datetime.fromtimestamp(b.image.created, UTC).isoformat(timespec="seconds"),
    }


def run_images(env: Environment, as_json: bool) -> int:
    enter_podman_userns(env)  # natively without root, mounts work only there
    images = bootable_images(env)
    if as_json:
        print(json.dumps([describe_bootable(b) for b in images], indent=2))
    else:
        print(render_bootable(images, time.time()))
    return 0
