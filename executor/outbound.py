"""Which addresses runs may call, and a resolver that lets connections reach only those.

By default a run may call only globally routable unicast addresses: a tenant names the URL, so anything the
executor's own network reaches (loopback, private ranges, cloud metadata, the services beside it) would otherwise
be the tenant's too. An operator allows networks despite that (`allow`, e.g. 127.0.0.0/8 for endpoints on their own
machine) and denies networks outright (`deny`, which wins over everything).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = IPv4Address | IPv6Address

# Python's is_global misses some of these (multicast, 192.0.0.0/24 and site-local count as global in 3.11), and
# 168.63.129.16 (Azure's wireserver) is public address space that only the cloud's own hosts can reach.
_REFUSED_V4 = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, where 100.100.100.200 is a cloud metadata service
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "168.63.129.16/32",
    )
)
# Globally routable IPv6 unicast is 2000::/3 minus these special-purpose blocks; all else (::, ::1, fc00::/7,
# fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48, 100::/64, ...) lies outside it.
_GLOBAL_V6 = ip_network("2000::/3")
_REFUSED_V6 = tuple(ip_network(n) for n in ("2001::/23", "2001:db8::/32", "3fff::/20"))
_NAT64 = ip_network("64:ff9b::/96")
_TRANSLATED = ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ip_network("::/96")


def embedded_v4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form stands for (mapped, translated, NAT64, 6to4, compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _TRANSLATED or address in _COMPATIBLE:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def routable(address: Address) -> bool:
    """Whether the address is globally routable unicast; a v6 form of a v4 address is judged by that address."""
    if isinstance(address, IPv6Address):
        if (v4 := embedded_v4(address)) is not None:
            return routable(v4)
        return address in _GLOBAL_V6 and address.is_global and not any(address in n for n in _REFUSED_V6)
    return address.is_global and not any(address in n for n in _REFUSED_V4)


class OutboundPolicy:
    """Denied networks always lose, allowed ones win over the default, and by default only routable addresses pass."""

    def __init__(self, allow: list[str] | None = None, deny: list[str] | None = None) -> None:
        self.allow = [ip_network(n, strict=False) for n in allow or []]
        self.deny = [ip_network(n, strict=False) for n in deny or []]

    def refuses(self, address: Address) -> bool:
        forms = [address]
        if isinstance(address, IPv6Address) and (v4 := embedded_v4(address)) is not None:
            forms.append(v4)
        if any(form in network for form in forms for network in self.deny):
            return True
        if any(form in network for form in forms for network in self.allow):
            return False
        return not routable(address)

    def refuses_literal(self, host: str) -> bool:
        return self.refuses(ipaddress.ip_address(host.partition("%")[0]))

    async def refuses_name(self, host: str) -> bool:
        """Resolves the name and refuses it if any of its addresses is refused: for a name that someone else
        (a proxy) connects to, whichever address they pick. A name that does not resolve is refused too, as
        one resolving to a refused address is: one answer for both tells no tenant which internal names exist."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return True
        return not infos or any(self.refuses_literal(info[4][0]) for info in infos)


class DestinationDenied(Exception):  # noqa: N818 - the run's error code names it
    """Not an OSError, so aiohttp passes it on as it is instead of wrapping it as a DNS failure."""


class CheckingResolver(AbstractResolver):
    """aiohttp's resolver, answering only the addresses the policy lets runs call (localhost with 127.0.0.0/8
    allowed: 127.0.0.1, not ::1). Connections go to the addresses it answers, so the addresses checked are the
    addresses called, and a DNS answer that changes after a check (rebinding) is checked again."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            results = await self._resolver.resolve(host, port, family)
        except OSError as error:  # no address: answered as a refused one, so names cannot be probed for
            raise DestinationDenied(f"{host} does not resolve: {error}") from None  # for the log, not the tenant
        allowed = [result for result in results if not self.policy.refuses_literal(result["host"])]
        if not allowed:
            addresses = ", ".join(result["host"] for result in results)
            raise DestinationDenied(f"{host} resolves to {addresses}")  # for the log, not the tenant
        return allowed

    async def close(self) -> None:
        await self._resolver.close()
