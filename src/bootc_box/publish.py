"""`--publish [IP:]HOSTPORT:GUESTPORT[/PROTO]`: guest ports forwarded by the
guest's network (network.py), on loopback unless the user names another address."""

import ipaddress
import re
from dataclasses import dataclass

from bootc_box.errors import BootcBoxError

LOOPBACK = "127.0.0.1"
_PUBLISH = re.compile(r"(?:(?P<ip>[0-9.]+):)?(?P<host>\d+):(?P<guest>\d+)(?:/(?P<proto>tcp|udp))?")


@dataclass(frozen=True)
class Publish:
    host_ip: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}:{self.guest_port}/{self.protocol}"


def parse_publish(text: str) -> Publish:
    """As podman's -p, but bound to 127.0.0.1 unless an address is given."""
    match = _PUBLISH.fullmatch(text)
    hint = "write it as [IP:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. 8080:80"
    if not match:
        raise BootcBoxError(f"invalid --publish {text!r}", hint)
    ip = match["ip"] or LOOPBACK
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise BootcBoxError(f"invalid address in --publish {text!r}", hint) from None
    ports = int(match["host"]), int(match["guest"])
    if not all(1 <= p <= 65535 for p in ports):
        raise BootcBoxError(f"port out of range in --publish {text!r}", "use ports 1-65535")
    return Publish(ip, *ports, match["proto"] or "tcp")
