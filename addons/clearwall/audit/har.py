"""HAR 1.2 export of log records, streamed entry by entry (a log can exceed memory)."""

from __future__ import annotations

from typing import IO, Iterable
from urllib.parse import parse_qsl, urlsplit

import orjson

from clearwall import __version__
from clearwall.audit.reader import get

_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 407: "Proxy Authentication Required", 413: "Content Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def _headers(mapping) -> list[dict]:
    out = []
    for name, value in (mapping or {}).items():
        for v in value if isinstance(value, list) else [value]:
            out.append({"name": name, "value": str(v)})
    return out


def _mime(mapping) -> str:
    value = (mapping or {}).get("content-type", "")
    return value[0] if isinstance(value, list) and value else value or ""


def _content(body: dict | None, headers) -> dict:
    body = body or {}
    out = {"size": body.get("bytes", 0), "mimeType": _mime(headers)}
    if "content" in body:
        out["text"] = body["content"]
        if body.get("encoding") == "base64":
            out["encoding"] = "base64"
    if body.get("truncated"):
        out["comment"] = f"truncated in the log; sha256 of the whole body {body.get('sha256')}"
    return out


def _http_version(record: dict) -> str:
    v = get(record, "http.version")
    return f"HTTP/{v}" if v else "HTTP/1.1"


def _url(record: dict) -> str:
    url = get(record, "url.full")
    if url:
        return url
    host = get(record, "destination.domain") or get(record, "destination.ip") or ""
    port = get(record, "destination.port") or 443
    return f"https://{host}:{port}/"


def entry(record: dict) -> dict:
    """One HAR entry; Clearwall's decision is kept in the `_clearwall` custom field."""
    req_headers = get(record, "http.request.headers")
    resp_headers = get(record, "http.response.headers")
    status = get(record, "http.response.status_code") or 0
    duration_ms = (get(record, "event.duration") or 0) / 1e6
    url = _url(record)
    request = {
        "method": get(record, "http.request.method") or "GET",
        "url": url,
        "httpVersion": _http_version(record),
        "cookies": [],
        "headers": _headers(req_headers),
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)],
        "headersSize": -1,
        "bodySize": get(record, "http.request.body.bytes") or 0,
    }
    req_body = get(record, "http.request.body")
    if isinstance(req_body, dict):
        content = _content(req_body, req_headers)
        request["postData"] = {"mimeType": content["mimeType"], "text": content.get("text", "")}
        if content.get("encoding"):
            request["postData"]["comment"] = "text is base64"
    out = {
        "startedDateTime": record.get("@timestamp", "1970-01-01T00:00:00.000Z"),
        "time": duration_ms,
        "request": request,
        "response": {
            "status": status,
            "statusText": _REASONS.get(status, ""),
            "httpVersion": _http_version(record),
            "cookies": [],
            "headers": _headers(resp_headers),
            "content": _content(get(record, "http.response.body"), resp_headers),
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": get(record, "http.response.body.bytes") or 0,
        },
        "cache": {},
        "timings": {"send": 0, "wait": duration_ms, "receive": 0},
        "_clearwall": {
            "id": get(record, "event.id"),
            "action": get(record, "event.action"),
            "reason": get(record, "event.reason"),
            "rules": get(record, "rule.name") or [],
            "client": get(record, "labels.client"),
        },
    }
    ip = get(record, "destination.ip")
    if ip:
        out["serverIPAddress"] = ip
    return out


def write_har(records: Iterable[dict], out: IO[bytes]) -> int:
    """Write a HAR 1.2 document to a binary stream; returns the number of entries."""
    creator = {"name": "clearwall", "version": __version__}
    out.write(b'{"log":{"version":"1.2","creator":' + orjson.dumps(creator) + b',"entries":[')
    n = 0
    for record in records:
        out.write((b"," if n else b"") + b"\n" + orjson.dumps(entry(record)))
        n += 1
    out.write(b"\n]}}\n")
    return n
