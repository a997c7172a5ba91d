"""The outbound-address guard: every form of a private address is refused, however it is
written; the operator's allow-list lets named hosts and networks through."""

from __future__ import annotations

import pytest

from app.utils.addresses import BlockedAddressError, resolve_public

BLOCKED = [
    "127.0.0.1",
    "localhost",  # a name that resolves to loopback
    "2130706433",  # 127.0.0.1 as one decimal number
    "0177.0.0.1",  # 127.0.0.1 in octal
    "0x7f.0.0.1",
    "127.1",
    "0.0.0.0",  # noqa: S104 (refused, not bound)
    "0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "169.254.169.254",  # cloud metadata
    "[::1]",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:7f00:1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:0001::",  # 6to4 around loopback
    "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fc00::1",
    "fe80::1",
    "ff02::1",
    "224.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "",
    "bad\x00host",
]


@pytest.mark.parametrize("host", BLOCKED)
async def test_private_addresses_are_refused_in_every_form(host: str) -> None:
    with pytest.raises(BlockedAddressError):
        await resolve_public(host, 443)


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
async def test_public_addresses_pass(host: str) -> None:
    assert await resolve_public(host, 443) == host.strip("[]")


async def test_the_operator_allow_list() -> None:
    assert await resolve_public("127.0.0.1", 80, allow_hosts=["127.0.0.1"]) == "127.0.0.1"
    assert await resolve_public("localhost", 80, allow_hosts=["LOCALHOST"]) in ("127.0.0.1", "::1")
    assert await resolve_public("10.1.2.3", 80, allow_hosts=["10.0.0.0/8"]) == "10.1.2.3"
    with pytest.raises(BlockedAddressError):
        await resolve_public("10.1.2.3", 80, allow_hosts=["10.9.0.0/16", "other.internal"])
    with pytest.raises(BlockedAddressError):
        await resolve_public("169.254.169.254", 80, allow_hosts=["10.0.0.0/8"])
