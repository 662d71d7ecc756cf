"""Credential injection: the proxy holds the secrets, clients never do (docs/CREDENTIALS.md).

Per request, in order: (1) a request that carries any secret Clearwall injects, to any
destination, plain or lightly encoded, is exfiltration and refused (content_blocked) — URL and
headers at `requestheaders`, the body at `request`; (2) `require: true` refuses when a secret of
the destination came out empty; (3) `strip_headers` removes what the client sent; (4) agreed
placeholders are swapped for their secret; (5) `inject_headers` are set. Injection happens at
`requestheaders` so a streamed request body cannot carry the headers out before it.
A response that echoes an injected secret back (debug endpoints, error pages) has it replaced
by [REDACTED] before the client sees it: the client must not learn what it never held.

Every value handled here goes into `FlowState.secrets`, which the body log scrubs; messages and
log lines name headers and destinations, never values.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from mitmproxy import http

from clearwall.content.decode import decode_content
from clearwall.content.errors import DecodeError, TooLarge
from clearwall.mitm import respond
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy.decision import Refusal
from clearwall.policy.ruleset import RuleSet
from clearwall.policy.secrets import EXFIL_RULE, Credential, ExfilDetector, all_secrets, credentials_for, swap_placeholders

log = logging.getLogger("clearwall")
THREAD_THRESHOLD = 64 * 1024  # bodies above this are searched off the event loop
DECODE_CAP = 64 * 1024**2  # decoded-size bound when the rules turn a cap off
REDACTED = b"[REDACTED]"


class _Compiled:
    """Everything derived from one rule set; built in a worker thread (it reads the rule files)."""

    def __init__(self, rules: RuleSet) -> None:
        self.creds: dict[str, Credential] = credentials_for(rules)
        self.detector = ExfilDetector(all_secrets(self.creds))
        # Longest first, so a secret that contains another is replaced whole.
        self.echo = {name: sorted((s.encode() for s in c.secrets if s), key=len, reverse=True)
                     for name, c in self.creds.items() if c.secrets}


PENDING = "clearwall.credential"  # flow.metadata key: the credential to inject in `request`


def _mode(rules: RuleSet, st: FlowState) -> str:
    d = rules.destination(st.decision.destination) if st.decision and st.decision.destination else None
    return d.mode if d is not None else rules.settings.mode


class Credentials:
    name = "clearwall-credentials"

    def __init__(self, runtime: Runtime, cache_size: int = 4) -> None:
        self.runtime = runtime
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Compiled] = OrderedDict()  # rules fingerprint -> compiled
        self._pending: dict[str, asyncio.Future] = {}  # one build per version, however many flows wait

    async def _compiled(self, rules: RuleSet) -> _Compiled:
        key = rules.fingerprint  # changes when a secret rotates, unlike the public version
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(asyncio.to_thread(_Compiled, rules))
        try:
            hit = await asyncio.shield(pending)
        finally:
            self._pending.pop(key, None)
        self._cache[key] = hit
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hit

    def _refuse(self, flow: http.HTTPFlow, rules: RuleSet, refusal: Refusal) -> bool:
        """Refuse, or in report mode remember the would-be refusal; True when refused."""
        st = flow_state(flow)
        if _mode(rules, st) == "report":
            st.would_block.append(refusal)
            return False
        respond.refuse(flow, refusal)
        return True

    def _exfiltration(self, flow: http.HTTPFlow, rules: RuleSet, where: str, found: tuple[str, str] | None) -> bool:
        if found is None:
            return False
        form, secret = found
        flow_state(flow).secrets.update((form, secret))
        log.warning("flow %s: a credential Clearwall injects was found in the request %s; refusing", flow.id, where)
        return self._refuse(flow, rules, Refusal(
            "content_blocked", EXFIL_RULE,
            f"the request {where} carries a credential that only Clearwall may send"))

    @guarded
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        rules = st.rules or self.runtime.require_rules()
        compiled = await self._compiled(rules)
        req = flow.request
        if compiled.detector:
            if self._exfiltration(flow, rules, "URL", compiled.detector.find(req.url)):
                return
            head = "\n".join(f"{k}: {v}" for k, v in req.headers.items(multi=True))
            if self._exfiltration(flow, rules, "headers", compiled.detector.find(head)):
                return
        cred = compiled.creds.get(st.decision.destination) if st.decision else None
        if cred is None or not cred.active:
            return
        st.secrets.update(cred.secrets)
        if cred.require and cred.missing:
            log.warning("flow %s: destination %s requires credentials that are empty: %s",
                        flow.id, cred.destination, ", ".join(cred.missing))
            if self._refuse(flow, rules, Refusal(
                    "request_denied", cred.destination,
                    f"the credential for destination {cred.destination} is not configured (require: true)")):
                return
        if req.scheme != "https" and (cred.inject or cred.placeholders):
            # A credential is never sent in clear text, whatever the destination's ports say.
            if self._refuse(flow, rules, Refusal(
                    "request_denied", cred.destination,
                    f"destination {cred.destination} gets credentials over HTTPS only")):
                return
        # Injected in `request`, after the content filters have scanned what the client sent:
        # they must never see (and block, or log) the credential Clearwall adds.
        flow.metadata[PENDING] = cred

    @staticmethod
    def _apply(req: http.Request, cred: Credential) -> None:
        for name in cred.strip:
            req.headers.pop(name, None)
        if cred.placeholders:
            marks = [ph.encode() for ph, _ in cred.placeholders]
            if any(m in v for _, v in req.headers.fields for m in marks):
                # Rewriting `fields` whole keeps order and duplicates (and is far cheaper than
                # clearing the multidict header by header).
                req.headers.fields = tuple((k, _swap_bytes(v, cred.placeholders)) for k, v in req.headers.fields)
            path = swap_placeholders(req.path, cred.placeholders, url=True)
            if path != req.path:
                req.path = path
        for name, value in cred.inject:
            if value.strip():
                req.headers[name] = value  # replaces every header of that name the client sent
            else:
                req.headers.pop(name, None)

    @guarded
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        rules = st.rules or self.runtime.require_rules()
        compiled = await self._compiled(rules)
        body = flow.request.raw_content
        if compiled.detector and body and await self._body_exfiltration(flow, rules, compiled, body):
            return
        cred = flow.metadata.pop(PENDING, None)
        if cred is not None:
            self._apply(flow.request, cred)

    async def _body_exfiltration(self, flow: http.HTTPFlow, rules: RuleSet, compiled: _Compiled, body: bytes) -> bool:
        encoding = flow.request.headers.get("content-encoding")
        if len(body) > THREAD_THRESHOLD or encoding:
            cap = rules.settings.limits.request_body
            try:
                found = await asyncio.to_thread(_search_body, compiled.detector, body, encoding,
                                                cap if cap is not None else DECODE_CAP)
            except TooLarge:
                respond.refuse(flow, Refusal("request_too_large", EXFIL_RULE, "the request body decodes beyond its size limit"))
                return True
            except DecodeError:
                respond.refuse(flow, Refusal("inspection_error", EXFIL_RULE,
                                             "the request body does not decode as its Content-Encoding says"))
                return True
        else:
            found = compiled.detector.find(body)
        return self._exfiltration(flow, rules, "body", found)

    async def _echo_needles(self, flow: http.HTTPFlow) -> list[bytes] | None:
        st = flow_state(flow)
        if flow.response is None or st.refusal is not None or st.decision is None or st.rules is None:
            return None
        return (await self._compiled(st.rules)).echo.get(st.decision.destination)

    @guarded
    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Here, not in `response`: a streamed response sends its headers right after this hook.
        needles = await self._echo_needles(flow)
        resp = flow.response
        if needles:
            echoed = [k.decode("latin-1") for k, v in resp.headers.fields if any(n in v for n in needles)]
            if echoed:
                resp.headers.fields = tuple((k, _scrub(v, needles)) for k, v in resp.headers.fields)
                _echoed(flow, ", ".join(echoed))

    @guarded
    async def response(self, flow: http.HTTPFlow) -> None:
        needles = await self._echo_needles(flow)
        resp = flow.response
        if needles and resp.raw_content and not resp.stream:
            if await self._scrub_body(resp, needles, flow_state(flow).rules):
                _echoed(flow, "body")

    @staticmethod
    async def _scrub_body(resp: http.Response, needles: list[bytes], rules: RuleSet) -> bool:
        body, encoding = resp.raw_content, resp.headers.get("content-encoding")
        cap = rules.settings.limits.response_body
        args = (body, encoding, needles, cap if cap is not None else DECODE_CAP)
        if len(body) > THREAD_THRESHOLD or encoding:
            result = await asyncio.to_thread(_scrubbed_body, *args)
        else:
            result = _scrubbed_body(*args)
        if result is None:
            return False
        content, decoded = result
        if not decoded:
            resp.headers.pop("content-encoding", None)  # the raw bytes were scrubbed as they are
        resp.content = content  # encoded again with the response's Content-Encoding, if any
        return True


def _echoed(flow: http.HTTPFlow, where: str) -> None:
    """A response echoed an injected credential, which was replaced: say so once per flow."""
    st = flow_state(flow)
    st.redacted = True
    if not any(m["rule"] == EXFIL_RULE and m["where"] == "response" for m in st.matches):
        st.matches.append({"rule": EXFIL_RULE, "where": "response", "action": "redact"})
    log.warning("flow %s: the response of %s echoed an injected credential (%s); replaced",
                flow.id, st.decision.destination, where)


def _scrubbed_body(body: bytes, encoding: str | None, needles: list[bytes], cap: int) -> tuple[bytes, bool] | None:
    """(scrubbed content, whether it is the decoded body), or None when nothing was echoed.

    An undecodable or oversized compressed body is searched as sent; the content filters refuse
    such a body anyway.
    """
    if encoding:
        try:
            decoded = decode_content(body, encoding, max_size=cap)
        except (DecodeError, TooLarge):
            decoded = None
        if decoded is not None and any(n in decoded for n in needles):
            return _scrub(decoded, needles), True
    if any(n in body for n in needles):
        return _scrub(body, needles), False
    return None


def _swap_bytes(value: bytes, placeholders: tuple[tuple[str, str], ...]) -> bytes:
    text = value.decode("utf-8", "surrogateescape")
    return swap_placeholders(text, placeholders).encode("utf-8", "surrogateescape")


def _scrub(data: bytes, needles: list[bytes]) -> bytes:
    for n in needles:
        data = data.replace(n, REDACTED)
    return data


def _search_body(detector: ExfilDetector, body: bytes, encoding: str | None, cap: int) -> tuple[str, str] | None:
    """Search the body as sent and, when compressed, as decoded (bounded; see content.decode).

    An undecodable body or a decompression bomb raises: it is refused, never passed unsearched.
    """
    found = detector.find(body)
    if found is None and encoding:
        found = detector.find(decode_content(body, encoding, max_size=cap))
    return found
