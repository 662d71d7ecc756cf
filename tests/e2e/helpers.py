"""Small real-client helpers for end-to-end tests."""

from __future__ import annotations

import base64
import json
import socket
import subprocess

import requests


def raw_connect(proxy_port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send a CONNECT by hand and read the proxy's answer (requests hides a refused CONNECT's body)."""
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *hdr_lines = head.decode().split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in hdr_lines)}
        n = int(hdrs.get("content-length", "0"))
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(status_line.split()[1]), hdrs, body


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def session(proxy, user: str | None = None, password: str | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    auth = f"{user}:{password}@" if user else ""
    url = proxy.url.replace("http://", f"http://{auth}")
    s.proxies = {"http": url, "https": url}
    s.verify = str(proxy.ca_cert)
    return s


def via_curl(curl_bin: str, proxy, url: str, *args: str) -> tuple[int, dict, bytes]:
    """Run real curl through the proxy; returns (status, headers, body)."""
    out = subprocess.run([curl_bin, "-sS", "-i", "--max-time", "20", "-x", proxy.url, "--cacert", str(proxy.ca_cert),
                          "--noproxy", "", *args, url], capture_output=True, timeout=30)
    raw = out.stdout
    # With -i, a refused CONNECT's response comes first; take the last response.
    blocks = raw.split(b"\r\n\r\n")
    status, headers, i = 0, {}, 0
    while i < len(blocks) and blocks[i].startswith(b"HTTP/"):
        lines = blocks[i].decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        i += 1
    return status, headers, b"\r\n\r\n".join(blocks[i:])


def refusal(body: bytes) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error", "rule", "message", "id"}, doc
    return doc
