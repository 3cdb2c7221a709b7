"""Which tunnel destinations are allowed: private and reserved addresses are refused unless exempted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Private, loopback, link-local, CGNAT, benchmarking, reserved and multicast ranges: Coder's list (see
# docs/compatibility.md#tunnel-destinations) plus multicast and `::`. IPv4-mapped IPv6 addresses are checked as the
# IPv4 address they carry.
BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)


def is_blocked(ip: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == n.version and ip in n for n in allowed):
        return False
    return any(ip.version == n.version and ip in n for n in BLOCKED)


class DestinationRefused(Exception):
    pass


def _literal(host: str) -> list[IPAddress]:
    """A host that is an address in its canonical notation, answered without the resolver: asyncio's getaddrinfo
    always runs on the default thread pool, a hop there and back that, on a busy process, was several ms of a new
    tunnel's tail. Anything else (names, `127.1`, scoped IPv6) goes to getaddrinfo as before."""
    if "%" in host:
        return []
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return []


async def resolve_allowed(host: str, port: int, allowed: Iterable[IPNetwork] = ()) -> str:
    """Resolve `host` and return the address to dial. Refused if any address it resolves to is blocked, so a
    name cannot smuggle a private address in beside a public one; the caller dials the checked address, so
    there is no window for DNS rebinding."""
    allowed = tuple(allowed)
    addrs = _literal(host)
    if not addrs:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise LookupError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addrs:
        raise LookupError(f"cannot resolve {host}")
    for ip in addrs:
        if is_blocked(ip, allowed):
            raise DestinationRefused(f"{host} resolves to {ip}, a private or reserved address")
    return str(addrs[0])
