"""Classification of upstream addresses for the SSRF check, after DNS resolution.

A name that resolves to an internal address is how an agent reaches cloud metadata or the
cluster's own services, so every resolved address is checked before connecting, including IPv6
forms that embed an IPv4 address (v4-mapped, v4-compatible, NAT64, 6to4, Teredo), which some
stacks route to the embedded address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from clearwall.policy.hosts import IPAddress, IPNetwork

_N = ipaddress.ip_network

# Checked in order; the first range containing the address names its category.
_V4_RANGES: list[tuple[IPNetwork, str]] = [
    (_N("169.254.169.254/32"), "metadata"),
    (_N("100.100.100.200/32"), "metadata"),  # Alibaba Cloud
    (_N("192.0.0.192/32"), "metadata"),  # Oracle Cloud
    (_N("0.0.0.0/8"), "unspecified"),
    (_N("10.0.0.0/8"), "private"),
    (_N("100.64.0.0/10"), "cgnat"),
    (_N("127.0.0.0/8"), "loopback"),
    (_N("169.254.0.0/16"), "link-local"),
    (_N("172.16.0.0/12"), "private"),
    (_N("192.0.0.0/24"), "reserved"),
    (_N("192.0.2.0/24"), "reserved"),
    (_N("192.88.99.0/24"), "reserved"),
    (_N("192.168.0.0/16"), "private"),
    (_N("198.18.0.0/15"), "reserved"),
    (_N("198.51.100.0/24"), "reserved"),
    (_N("203.0.113.0/24"), "reserved"),
    (_N("224.0.0.0/4"), "multicast"),
    (_N("240.0.0.0/4"), "reserved"),  # includes 255.255.255.255 broadcast
]
_V6_RANGES: list[tuple[IPNetwork, str]] = [
    (_N("fd00:ec2::254/128"), "metadata"),  # AWS IMDS over IPv6
    (_N("::/128"), "unspecified"),
    (_N("::1/128"), "loopback"),
    (_N("fc00::/7"), "private"),
    (_N("fe80::/10"), "link-local"),
    (_N("fec0::/10"), "private"),  # deprecated site-local
    (_N("ff00::/8"), "multicast"),
    (_N("2001:db8::/32"), "reserved"),
    (_N("100::/64"), "reserved"),  # discard-only
]
_NAT64 = (_N("64:ff9b::/96"), _N("64:ff9b:1::/48"))
_TEREDO = _N("2001::/32")
_SIX_TO_FOUR = _N("2002::/16")
_V4_COMPAT = _N("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for the forms that route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    n = int(ip)
    if any(ip in net for net in _NAT64) or (ip in _V4_COMPAT and n > 1):
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((n >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:
        return ipaddress.IPv4Address((n & 0xFFFFFFFF) ^ 0xFFFFFFFF)  # the client, obfuscated
    return None


def classify(ip: IPAddress) -> str | None:
    """Category of a non-public address ("metadata", "private", "loopback", ...), else None."""
    if ip.version == 6:
        inner = embedded_ipv4(ip)
        if inner is not None:
            category = classify(inner)
            return f"{category} (embedded in IPv6)" if category else None
        ranges = _V6_RANGES
    else:
        ranges = _V4_RANGES
    for net, category in ranges:
        if ip in net:
            return category
    return None


def _allowed(ip: IPAddress, allow: Iterable[IPNetwork]) -> bool:
    candidates = [ip]
    if ip.version == 6 and (inner := embedded_ipv4(ip)) is not None:
        candidates.append(inner)
    return any(c.version == n.version and c in n for c in candidates for n in allow)


def refusal_reason(ip: IPAddress, *, deny_private: bool, allow: Iterable[IPNetwork]) -> str | None:
    """Why connecting to `ip` is refused, or None when it may be reached."""
    if not deny_private:
        return None
    category = classify(ip)
    if category is None or _allowed(ip, allow):
        return None
    return f"{ip} is a {category} address"
