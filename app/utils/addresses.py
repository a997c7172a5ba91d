"""The outbound-address guard: which addresses a connection made on a tenant's behalf may
reach. Names are resolved and every address checked, so a name that points at loopback,
a private network or the cloud metadata service is refused; the caller connects to the
address that was checked (pinned), never resolves again."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not covered by `is_global`, or worth naming: CGNAT, the metadata services of the big
# clouds (IPv4 link-local and AWS's IPv6 one), benchmarking and documentation ranges.
_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",
        "169.254.0.0/16",
        "192.0.0.0/24",  # IETF protocol assignments (some called global by Python 3.11)
        "fec0::/10",  # old site-local
        "198.18.0.0/15",
        "fd00:ec2::/32",
        "64:ff9b::/96",  # NAT64: its embedded IPv4 address is checked instead
    )
)


class BlockedAddressError(Exception):
    """The destination is not a public address (or does not resolve)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if packed[:12] == bytes(12) and address not in (
        ipaddress.IPv6Address("::"),
        ipaddress.IPv6Address("::1"),
    ):
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible (deprecated form)
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_public(address: IPAddress) -> bool:
    """Whether a connection to `address` leaves this host and its private networks."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    if any(address in network for network in _BLOCKED):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


async def resolve_public(host: str, port: int, *, allow_hosts: Iterable[str] = ()) -> str:
    """The first address `host` resolves to, if every address it resolves to is public
    (or the host is on the operator's allow-list); else BlockedAddressError."""
    host = host.strip().rstrip(".").lower()
    if not host or "\x00" in host:
        raise BlockedAddressError("no host")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError) as exc:
        raise BlockedAddressError(f"{host} does not resolve") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise BlockedAddressError(f"{host} does not resolve")
    allowed = [h.strip().lower() for h in allow_hosts]
    if host in allowed:
        return addresses[0]
    networks = [n for n in map(_network, allowed) if n is not None]
    for text in addresses:
        address = parse_address(text)
        if address is None:
            raise BlockedAddressError(f"{host} is not a public address")
        if not is_public(address) and not any(address in n for n in networks):
            raise BlockedAddressError(f"{host} is not a public address")
    return addresses[0]


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An allow-list entry that names addresses (`10.0.0.0/8`, `10.1.2.3`), or None for a
    host name."""
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None
