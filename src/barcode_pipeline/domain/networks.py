"""Trusted networks: keyless scans admitted by source address, each network with its device patterns.

The migration path for scanners that cannot send a key (the public Java scanner sends no auth
header). Format of ``BP_INGEST_TRUSTED_NETWORKS``: ``CIDR=PATTERN[,PATTERN]`` entries separated by
``;``, e.g. ``10.20.0.0/16=SEOUL-CENTER-PC-*;127.0.0.1/32=*``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from barcode_pipeline.domain.devices import DevicePatterns, parse_patterns
from barcode_pipeline.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedNetwork:
    network: Network
    patterns: tuple[str, ...]

    @property
    def name(self) -> str:
        """What logs and metrics call a request admitted this way (there is no key name)."""
        return f"network:{self.network}"


def parse_trusted_networks(text: str) -> tuple[TrustedNetwork, ...]:
    entries = []
    for raw in text.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        cidr, sep, patterns = entry.partition("=")
        if not sep:
            raise ConfigError(f"trusted network {entry!r} needs device patterns: CIDR=PATTERN[,PATTERN]")
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            raise ConfigError(f"trusted network {cidr.strip()!r}: {exc}") from None
        entries.append(TrustedNetwork(network, parse_patterns(patterns)))
    return tuple(entries)


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``BP_INGEST_PROXIES``: addresses or CIDRs, comma-separated (a bare address is a /32 or /128)."""
    found = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            found.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ConfigError(f"proxy {entry!r}: {exc}") from None
    return tuple(found)


class NetworkTable:
    """Finds the first trusted network holding an address; verdicts memoised per address."""

    def __init__(self, networks: tuple[TrustedNetwork, ...]) -> None:
        self.networks = networks
        self.patterns = [DevicePatterns(n.patterns) for n in networks]
        self._memo: dict[str, int | None] = {}

    @classmethod
    def of(cls, addresses: str) -> NetworkTable:
        """A table of plain addresses or CIDRs, comma-separated (no device patterns: who, not what)."""
        return cls(tuple(TrustedNetwork(n, ("*",)) for n in parse_proxies(addresses)))

    def lookup(self, host: str) -> int | None:
        """Index of the network holding ``host`` (an IP literal), or None."""
        if not self.networks:
            return None
        try:
            return self._memo[host]
        except KeyError:
            pass
        found: int | None = None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None  # not an IP (a unix socket or a test client): never trusted
        if address is not None:
            mapped = getattr(address, "ipv4_mapped", None)
            address = mapped or address
            for i, trusted in enumerate(self.networks):
                if address.version == trusted.network.version and address in trusted.network:
                    found = i
                    break
        if len(self._memo) >= 4096:
            self._memo.clear()
        self._memo[host] = found
        return found
