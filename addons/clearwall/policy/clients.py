"""Who is asking: clients identified by proxy credentials or by source address.

Order: credentials, when sent, must name a known `proxy_user` with the right token (compared in
constant time) — wrong or unknown credentials are refused, never silently downgraded to a
source match. Without credentials, the first client whose `source` covers the address. Nobody
matched and `require_client_auth`: refused (407).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from clearwall.policy.decision import Refusal
from clearwall.policy.hosts import parse_ip
from clearwall.policy.ruleset import CompiledClient, RuleSet

AUTH_RULE = "client-auth"


@dataclass(frozen=True)
class Identity:
    client: str | None  # the client's rule name; None = unidentified
    user: str | None = None  # the proxy user name that authenticated, if any
    refusal: Refusal | None = None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """`Basic base64(user:pass)` -> (user, pass); None when absent or not Basic."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _by_source(clients: tuple[CompiledClient, ...], source_ip: str) -> CompiledClient | None:
    ip = parse_ip(source_ip)
    if ip is None:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for c in clients:
        if c.proxy_user is None and any(ip.version == n.version and ip in n for n in c.sources):
            return c
    return None


def identify(rules: RuleSet, source_ip: str, proxy_authorization: str | None) -> Identity:
    creds = parse_basic(proxy_authorization)
    if proxy_authorization and creds is None:
        return Identity(None, refusal=Refusal("auth_required", AUTH_RULE, "malformed Proxy-Authorization (expected Basic)"))
    if creds is not None:
        user, password = creds
        ip = parse_ip(source_ip)
        for c in rules.clients:
            if c.proxy_user is None or not hmac.compare_digest(c.proxy_user.encode(), user.encode()):
                continue
            token_ok = c.token is not None and hmac.compare_digest(c.token.encode(), password.encode())
            source_ok = not c.sources or (ip is not None and any(ip.version == n.version and ip in n for n in c.sources))
            if token_ok and source_ok:
                return Identity(c.name, user=user)
        return Identity(None, user=user, refusal=Refusal("auth_required", AUTH_RULE, "proxy credentials were not accepted"))
    c = _by_source(rules.clients, source_ip)
    if c is not None:
        return Identity(c.name)
    if rules.settings.require_client_auth:
        return Identity(None, refusal=Refusal("auth_required", AUTH_RULE, "this proxy requires client authentication"))
    return Identity(None)


def challenge(rules: RuleSet, refusal: Refusal | None, identity: Identity, sent_credentials: bool) -> Refusal | None:
    """Turn "this destination does not list you" into a 407 challenge when the client sent no
    credentials and every client the destination lists authenticates with proxy credentials:
    clients that only send credentials after a challenge (git, libcurl) then work unconfigured."""
    if refusal is None or refusal.kind != "destination_denied" or identity.client is not None or sent_credentials:
        return refusal
    dest = rules.destination(refusal.rule)
    if dest is None or not dest.clients:
        return refusal
    by_name = {c.name: c for c in rules.clients}
    if all(by_name.get(n) is not None and by_name[n].proxy_user is not None for n in dest.clients):
        return Refusal("auth_required", AUTH_RULE, f"destination {dest.name} needs proxy credentials")
    return refusal
