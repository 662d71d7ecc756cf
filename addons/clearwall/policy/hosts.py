"""Host names and host patterns, compared the way a security engineer expects.

Names are compared lower-cased, IDNA-encoded and without a trailing dot, so `API.GitHub.com.`
and `api.github.com` are one destination. `*.example.com` matches any depth of subdomain but not
the apex. IP literals and CIDRs match addresses only, never names.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


_IP_CHARS = frozenset("0123456789abcdefABCDEF:.[]% \t")


@functools.lru_cache(maxsize=8192)
def parse_ip(text: str) -> IPAddress | None:
    """An IP literal (`10.0.0.1`, `::1`, `[::1]`) or None when `text` is a name."""
    if not set(text) <= _IP_CHARS:  # a name: skip ipaddress's exception path (hot, per request)
        return None
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


@functools.lru_cache(maxsize=8192)  # every request normalises its host several times
def normalize_host(name: str) -> str:
    """Canonical form of a requested host. Raises ValueError for a name no rule could allow."""
    host = name.strip().rstrip(".").lower()
    ip = parse_ip(host)
    if ip is not None:
        return str(ip)
    if not host:
        raise ValueError("empty host name")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"host name {name!r} is not a valid internationalised name") from e
    labels = host.split(".")
    if len(host) > 253 or any(not lab or len(lab) > 63 or not set(lab) <= _LABEL_OK for lab in labels):
        raise ValueError(f"{name!r} is not a valid host name")
    return host


@dataclass(frozen=True)
class HostPattern:
    """One entry of a rule's `hosts:` list."""

    text: str
    kind: str  # "exact" | "wildcard" | "network"
    name: str = ""  # exact name, or the suffix after "*." for wildcards
    network: IPNetwork | None = None

    def matches(self, host: str) -> bool:
        """`host` is already normalised (see normalize_host)."""
        if self.kind == "network":
            ip = parse_ip(host)
            return ip is not None and ip.version == self.network.version and ip in self.network
        if self.kind == "exact":
            return host == self.name
        return host.endswith("." + self.name)


def parse_host_pattern(text: str) -> HostPattern:
    """Parse a rule host entry. Raises ValueError with the fix where one is known."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a host must be a non-empty string")
    raw = text.strip()
    if "/" in raw or parse_ip(raw) is not None:
        try:
            net = ipaddress.ip_network(raw.strip("[]"), strict=False)
        except ValueError as e:
            raise ValueError(f"{raw!r} is neither a host name nor a valid IP address or CIDR") from e
        return HostPattern(raw, "network", network=net)
    if ":" in raw:
        raise ValueError(f"{raw!r} contains a port: put ports under `ports:`")
    wildcard = raw.startswith("*.")
    body = raw[2:] if wildcard else raw
    if "*" in body:
        raise ValueError(f"{raw!r}: only a leading `*.` wildcard is supported (e.g. \"*.example.com\")")
    if not body.isascii():
        try:
            suggestion = body.rstrip(".").lower().encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{raw!r} is not a valid internationalised host name") from None
        prefix = "*." if wildcard else ""
        raise ValueError(f"{raw!r} is not ASCII: use \"{prefix}{suggestion}\"")
    name = normalize_host(body)  # case and a trailing dot are forgiven, as in requests
    return HostPattern(raw, "wildcard" if wildcard else "exact", name=name)


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid IP address or CIDR (e.g. 10.0.3.0/24)") from e
