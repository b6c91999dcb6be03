"""What the place we run in offers, and how to name a fix for it."""

import os
from dataclasses import dataclass
from pathlib import Path

# Set by the box's entrypoint; natively bootc-box runs on the user's host.
IN_BOX_VARIABLE = "BOOTC_BOX_IN_CONTAINER"
# Where the box expects the host's image store (read-only, an additional store).
HOST_STORE = Path("/var/lib/containers/host-storage")


@dataclass(frozen=True)
class Environment:
    in_box: bool

    @property
    def kvm_hint(self) -> str:
        if self.in_box:
            return "add --device /dev/kvm to the podman run line"
        return "load the kvm module and give your user access to /dev/kvm (the kvm group)"

    @property
    def missing_image_hint(self) -> str:
        if self.in_box:
            return (
                "share the host's images with "
                f"-v /var/lib/containers/storage:{HOST_STORE}:ro, "
                "or mount an archive and pass oci-archive:PATH"
            )
        return "build or pull it with podman first, or pass oci-archive:PATH"

    def archive_hint(self, path: str) -> str:
        if self.in_box:
            return f"mount it into the box, e.g. -v {path}:{path}:ro"
        return "check the path"


def probe_environment() -> Environment:
    return Environment(in_box=os.environ.get(IN_BOX_VARIABLE) == "1")
