"""Fetch one URL with a Python HTTP library configured as docs/CLIENTS.md says; print one JSON line.

Usage: py_client.py LIBRARY URL, LIBRARY one of requests, requests-explicit, httpx,
httpx-explicit, aiohttp, aiohttp-explicit, aiohttp-without-trust-env. The `*-explicit` forms take the proxy and CA from CLEARWALL_PROXY and
CLEARWALL_CA (the code recipe); the others take nothing but the standard environment variables
(the environment recipe). Output: {"status", "headers", "body"} or {"error", "message", "status",
"headers"} when the library raised (a refused CONNECT surfaces as an exception).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from urllib.parse import unquote, urlsplit


def _requests(url: str, explicit: bool) -> dict:
    import requests

    kwargs: dict = {}
    if explicit:
        proxy = os.environ["CLEARWALL_PROXY"]
        kwargs = {"proxies": {"https": proxy, "http": proxy}, "verify": os.environ["CLEARWALL_CA"]}
    try:
        # Without kwargs: HTTPS_PROXY / HTTP_PROXY and REQUESTS_CA_BUNDLE from the environment.
        r = requests.get(url, timeout=20, **kwargs)
    except requests.exceptions.RequestException as e:
        return {"error": type(e).__name__, "message": str(e)}
    return {"status": r.status_code, "headers": dict(r.headers), "body": r.text}


def _httpx(url: str, explicit: bool) -> dict:
    import httpx

    if explicit:
        ctx = ssl.create_default_context(cafile=os.environ["CLEARWALL_CA"])
        client = httpx.Client(proxy=os.environ["CLEARWALL_PROXY"], verify=ctx, timeout=20)
    else:
        client = httpx.Client(timeout=20)  # trust_env=True: HTTPS_PROXY and SSL_CERT_FILE
    try:
        with client:
            r = client.get(url)
    except httpx.HTTPError as e:
        return {"error": type(e).__name__, "message": str(e)}
    return {"status": r.status_code, "headers": dict(r.headers), "body": r.text}


async def _aiohttp(url: str, explicit: bool, trust_env: bool = True) -> dict:
    import aiohttp

    kwargs: dict = {}
    if explicit:
        # Credentials go in proxy_auth, not in the proxy URL: aiohttp repeats the URL in its errors.
        proxy = urlsplit(os.environ["CLEARWALL_PROXY"])
        kwargs = {"proxy": f"{proxy.scheme}://{proxy.hostname}:{proxy.port}",
                  "ssl": ssl.create_default_context(cafile=os.environ["CLEARWALL_CA"])}
        if proxy.username:
            kwargs["proxy_auth"] = aiohttp.BasicAuth(unquote(proxy.username), unquote(proxy.password or ""))
    timeout = aiohttp.ClientTimeout(total=20)
    # trust_env=True: HTTPS_PROXY (credentials in it included); the default SSL context reads SSL_CERT_FILE.
    async with aiohttp.ClientSession(trust_env=trust_env and not explicit, timeout=timeout) as s:
        try:
            async with s.get(url, **kwargs) as r:
                return {"status": r.status, "headers": dict(r.headers), "body": await r.text()}
        except aiohttp.ClientResponseError as e:  # ClientHttpProxyError: the refused CONNECT, headers included
            return {"error": type(e).__name__, "message": str(e), "status": e.status,
                    "headers": dict(e.headers or {})}
        except aiohttp.ClientError as e:
            return {"error": type(e).__name__, "message": str(e)}


def main(argv: list[str]) -> int:
    lib, url = argv[1], argv[2]
    if lib in ("requests", "requests-explicit"):
        out = _requests(url, lib.endswith("explicit"))
    elif lib in ("httpx", "httpx-explicit"):
        out = _httpx(url, lib.endswith("explicit"))
    elif lib in ("aiohttp", "aiohttp-explicit"):
        out = asyncio.run(_aiohttp(url, lib.endswith("explicit")))
    elif lib == "aiohttp-without-trust-env":  # the mistake the guide warns about
        out = asyncio.run(_aiohttp(url, False, trust_env=False))
    else:
        raise SystemExit(f"unknown library {lib!r}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
