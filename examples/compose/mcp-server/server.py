"""A minimal MCP server (JSON-RPC 2.0 over HTTP POST /mcp) for the Compose example.

Stdlib only, because its network has no route to a package index: its one tool fetches
https://api.github.com/zen, which goes through HTTPS_PROXY (Clearwall) and is verified
against the trust store install-ca.sh updated at start.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOLS = [
    {
        "name": "github_zen",
        "description": "A line of GitHub zen, fetched through the egress proxy.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "fetch_url",
        "description": "GET any URL (the proxy decides whether it is allowed).",
        "inputSchema": {"type": "object", "properties": {"url": {"type": "string"}},
                        "required": ["url"]},
    },
]


def fetch(url: str) -> str:
    # urllib honours HTTPS_PROXY and, through OpenSSL, SSL_CERT_FILE.
    req = urllib.request.Request(url, headers={"User-Agent": "clearwall-sample-mcp"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        # A refusal by Clearwall carries its reason as JSON and an X-Clearwall-Rule header.
        return f"HTTP {e.code} (rule {e.headers.get('X-Clearwall-Rule')}): {e.read(4096).decode()}"


def handle(msg: dict) -> dict | None:
    method, mid = msg.get("method"), msg.get("id")
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "clearwall-sample", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        params = msg.get("params") or {}
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "github_zen":
            text = fetch("https://api.github.com/zen")
        elif name == "fetch_url":
            text = fetch(str(args.get("url", "")))
        else:
            return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": "unknown tool"}}
        result = {"content": [{"type": "text", "text": text}]}
    elif mid is None:
        return None  # a notification
    else:
        return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "method not found"}}
    return {"jsonrpc": "2.0", "id": mid, "result": result}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        try:
            reply = handle(json.loads(self.rfile.read(length)))
        except ValueError:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        body = json.dumps(reply).encode() if reply else b""
        self.send_response(200 if reply else 202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
