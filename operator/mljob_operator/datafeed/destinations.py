"""Where a datafeed may pull from: anything but link-local addresses (cloud metadata
services live there) and the Kubernetes apiserver itself, unless an operator-level
allow-list (`MLJOB_DATAFEED_ALLOW`) names them.

A datafeed URL is typed by whoever may edit an MLJob, and the operator fetches it with its
own network position, so without this a job could read the node's cloud credentials or
probe the apiserver as the operator. The check runs on resolved addresses (a resolver
wraps aiohttp's), so a hostname that resolves to a refused address is refused too, and
on IP literals before any connection. Redirects are never followed (see `sources`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class DestinationRefused(OSError):
    """The datafeed may not connect there; the message says why and how to allow it."""


@dataclass(frozen=True)
class DestinationPolicy:
    forbidden_endpoints: frozenset[tuple[str, int]] = frozenset()
    """(IP, port) of the apiserver as this operator reaches it."""
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def build(
        cls, apiserver: tuple[tuple[str, int], ...] = (), allow: tuple[str, ...] = ()
    ) -> DestinationPolicy:
        """`apiserver`: (host, port) endpoints, resolved here; `allow`: hostnames, IPs or
        CIDRs that are always allowed."""
        endpoints = set()
        for host, port in apiserver:
            for ip in _resolve_now(host):
                endpoints.add((ip, port))
        networks, hosts = [], set()
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower())
        return cls(frozenset(endpoints), frozenset(hosts), tuple(networks))

    def refusal(self, hostname: str, ip: str, port: int) -> str | None:
        """Why connecting to `ip`:`port` for `hostname` is refused, or None."""
        address = _address(ip)
        if address is None:
            return None
        if hostname.lower() in self.allowed_hosts or any(
            address in net for net in self.allowed_networks if net.version == address.version
        ):
            return None
        canonical = str(address)
        if any(address in net for net in LINK_LOCAL if net.version == address.version):
            why = f"{canonical} is a link-local address (cloud metadata services live there)"
        elif (canonical, port) in self.forbidden_endpoints:
            why = f"{canonical}:{port} is the Kubernetes apiserver"
        else:
            return None
        return f"{why}; an operator may allow it with MLJOB_DATAFEED_ALLOW"

    def check(self, hostname: str, port: int) -> None:
        """Refuse an IP-literal host before connecting (names are checked on resolution)."""
        refused = self.refusal(hostname, hostname.strip("[]"), port)
        if refused is not None:
            raise DestinationRefused(refused)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy allows."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        refusals = [self.policy.refusal(host, r["host"], port) for r in found]
        kept = [r for r, refused in zip(found, refusals, strict=True) if refused is None]
        if not kept:
            raise DestinationRefused(f"{host}: {next(r for r in refusals if r)}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _resolve_now(host: str) -> set[str]:
    literal = _address(host.strip("[]"))
    if literal is not None:
        return {str(literal)}
    try:
        infos: list[Any] = socket.getaddrinfo(host, None)
    except OSError:
        return set()
    return {str(_address(info[4][0])) for info in infos if _address(info[4][0]) is not None}
