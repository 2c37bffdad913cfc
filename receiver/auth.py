"""Who may post events: Basic credentials, and optionally a list of source networks.

Bandwidth sends no signature and publishes no address list; authenticity rests on HTTPS
and Basic auth. It may send a first request without credentials and expect `401` with a
`WWW-Authenticate` challenge before it resends with them, so every refusal for missing or
bad credentials carries the challenge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal, TypeAlias

from aiohttp import web

from shared.settings import ConfigError

__all__ = ["Gate", "Refusal", "open_to_anyone", "parse_networks"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Refusal: TypeAlias = Literal["forbidden", "missing", "malformed", "wrong"]


def parse_networks(values: Iterable[str], variable: str) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `2001:db8::/32` or a single address; ConfigError names the variable."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
    return tuple(networks)


def open_to_anyone(host: str, basic_auth: Sequence[str], allow_cidrs: Sequence[str]) -> bool:
    """Listening beyond loopback with neither credentials nor a network list: anyone who
    reaches the port may post events (and raise alerts)."""
    if basic_auth or allow_cidrs:
        return False
    if host == "localhost":
        return False
    address = _address(host)
    return address is None or not address.is_loopback


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


class Gate:
    """Checks one request: source network first (403), then credentials (401)."""

    def __init__(
        self,
        *,
        credentials: Sequence[str] = (),
        realm: str = "rtt-events",
        allow: Sequence[Network] = (),
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self._expected = [pair.encode() for pair in credentials]
        # The header a client builds from each pair, as a client writes it: the usual
        # request matches one of these and needs no decoding.
        self._expected_headers = [
            "Basic " + base64.b64encode(pair).decode() for pair in self._expected
        ]
        self._allow = tuple(allow)
        self._proxies = tuple(trusted_proxies)
        realm = realm.replace("\\", "\\\\").replace('"', '\\"')
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def client_address(self, request: web.BaseRequest) -> str | None:
        """The peer, or the client a trusted proxy names in X-Forwarded-For."""
        if not self._proxies:
            return request.remote
        peer = _address(request.remote)
        if peer is None or not _within(peer, self._proxies):
            return request.remote
        forwarded = request.headers.getall("X-Forwarded-For", [])
        hops = [hop.strip() for header in forwarded for hop in header.split(",")]
        # From the nearest hop back: the first one that is not one of our proxies is the
        # client; anything further left could have been written by the client itself.
        client: str | None = request.remote
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return None
            client = str(address)
            if not _within(address, self._proxies):
                break
        return client

    def refusal(self, request: web.BaseRequest) -> Refusal | None:
        """Why this request may not post, or None if it may."""
        if self._allow:
            address = _address(self.client_address(request))
            if address is None or not _within(address, self._allow):
                return "forbidden"
        if not self._expected:
            return None
        header = request.headers.get("Authorization")
        if header is None:
            return "missing"
        if header.isascii():  # compare_digest takes ASCII text only
            # Compared with every pair, without stopping at a match, so the time taken
            # says nothing about which pair (or how much of one) was right.
            matched = False
            for expected_header in self._expected_headers:
                matched |= hmac.compare_digest(header, expected_header)
            if matched:
                return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return "malformed"
        try:
            presented = binascii.a2b_base64(token.strip().encode("ascii"), strict_mode=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return "malformed"
        if b":" not in presented:
            return "malformed"
        # Other spellings (scheme case, spaces, padding): decoded, then compared the same way.
        matched = False
        for expected in self._expected:
            matched |= hmac.compare_digest(presented, expected)
        return None if matched else "wrong"
