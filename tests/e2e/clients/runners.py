"""One runner per client recipe of docs/CLIENTS.md: (proxy, url, credentials, home) -> Outcome.

`credentials` is "user:token" or None; `home` is a scratch directory used as $HOME. Each runner
starts the real client in a clean environment holding only the recipe's variables, and skips
(never fails) when the runtime is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.proxy import Proxy

CLIENTS = Path(__file__).parent


@dataclass
class Outcome:
    """What a client saw: a response (status, headers, body) or an error message."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}


def clean_env(home: Path, **recipe: str) -> dict[str, str]:
    """Only what a container would have, plus the recipe's variables: nothing leaks from this machine."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **recipe}


def proxy_url(proxy: Proxy, creds: str | None) -> str:
    return f"http://{creds}@127.0.0.1:{proxy.port}" if creds else proxy.url


def run_json(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Outcome:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines, f"{cmd} failed ({out.returncode}): {out.stderr}"
    doc = json.loads(lines[-1])
    return Outcome(doc.get("status"), doc.get("headers") or {}, doc.get("body", ""),
                   f"{doc.get('error', '')}: {doc.get('message', '')}" if "error" in doc else "")


# --- one runner per recipe: (proxy, url, credentials "user:token" or None, home) -> Outcome ---


def _parse_curl(stdout: bytes) -> tuple[int | None, dict[str, str], bytes]:
    """With -i, curl prints every response head it got (a refused CONNECT's too): keep the last one."""
    status, headers, rest = None, {}, stdout
    while rest.startswith(b"HTTP/"):
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, rest


def _curl(cmd: list[str], env: dict[str, str]) -> Outcome:
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=60)
    status, headers, body = _parse_curl(out.stdout)
    if out.returncode != 0:  # e.g. 56 "CONNECT tunnel failed, response 403": the head is still printed by -i
        return Outcome(status, headers, body.decode(errors="replace"), out.stderr.decode(errors="replace"))
    return Outcome(status, headers, body.decode(errors="replace"))


def curl_flags(proxy, url, creds, home):
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    cmd = [curl, "-sS", "-i", "--max-time", "20", "-x", proxy.url, "--cacert", str(proxy.ca_cert)]
    if creds:
        cmd += ["--proxy-user", creds]
    return _curl(cmd + [url], clean_env(home))


def curl_env(proxy, url, creds, home):
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), CURL_CA_BUNDLE=str(proxy.ca_cert))
    return _curl([curl, "-sS", "-i", "--max-time", "20", url], env)


def python_runner(lib: str, env_recipe: dict[str, str]):
    def run(proxy, url, creds, home):
        module = lib.split("-")[0]
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed in this Python (it belongs in the test extras)")
        env = clean_env(home, **{k: v.format(proxy=proxy_url(proxy, creds), ca=proxy.ca_cert)
                                 for k, v in env_recipe.items()})
        return run_json([sys.executable, str(CLIENTS / "py_client.py"), lib, url], env)
    return run


python_requests = python_runner("requests", {"HTTPS_PROXY": "{proxy}", "REQUESTS_CA_BUNDLE": "{ca}"})
python_requests_explicit = python_runner("requests-explicit", {"CLEARWALL_PROXY": "{proxy}", "CLEARWALL_CA": "{ca}"})
python_httpx = python_runner("httpx", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"})
python_httpx_explicit = python_runner("httpx-explicit", {"CLEARWALL_PROXY": "{proxy}", "CLEARWALL_CA": "{ca}"})
python_aiohttp = python_runner("aiohttp", {"HTTPS_PROXY": "{proxy}", "SSL_CERT_FILE": "{ca}"})
python_aiohttp_explicit = python_runner("aiohttp-explicit", {"CLEARWALL_PROXY": "{proxy}", "CLEARWALL_CA": "{ca}"})


def node_major() -> int:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


_UNDICI_SKIP: list[str] = []  # why undici could not be installed, so later tests skip without retrying


def undici_dir(home: Path) -> Path:
    """undici from the npm registry into the module's scratch directory, once."""
    d = home / "undici"
    if (d / "node_modules" / "undici").is_dir():
        return d
    if _UNDICI_SKIP:
        pytest.skip(_UNDICI_SKIP[0])
    npm = shutil.which("npm")
    if npm is None:
        _UNDICI_SKIP.append("npm is not installed, so undici cannot be installed")
        pytest.skip(_UNDICI_SKIP[0])
    d.mkdir(exist_ok=True)
    shutil.copy(CLIENTS / "node_fetch.mjs", d / "node_fetch.mjs")  # resolves `undici` from d/node_modules
    out = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
                          "--prefix", str(d), "undici@7"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not (d / "node_modules" / "undici").is_dir():
        _UNDICI_SKIP.append(f"npm could not install undici (registry unreachable?): {out.stderr.strip()[-300:]}")
        pytest.skip(_UNDICI_SKIP[0])
    return d


def _node(mode: str):
    def run(proxy, url, creds, home):
        major = node_major()
        env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), NODE_EXTRA_CA_CERTS=str(proxy.ca_cert))
        if mode == "env":
            if major < 24:
                pytest.skip(f"NODE_USE_ENV_PROXY needs Node.js >= 24; this machine has Node.js {major}")
            env["NODE_USE_ENV_PROXY"] = "1"
            d = CLIENTS
        else:
            d = undici_dir(home)
        return run_json([shutil.which("node"), str(d / "node_fetch.mjs"), mode, url], env, cwd=d)
    return run


node_undici_agent = _node("undici-agent")
node_undici_global = _node("undici-global")
node_env_proxy = _node("env")


def _go(explicit: bool):
    def run(proxy, url, creds, home):
        go = shutil.which("go") or pytest.skip("Go is not installed on this machine (the recipe is documented, not run)")
        binary = home / "go_get"
        if not binary.exists():  # built once per module; the build needs no network (standard library only)
            # The user's build cache: compiling net/http from nothing takes tens of seconds.
            cache = os.environ.get("GOCACHE") or str(Path.home() / ".cache" / "go-build")
            build_env = clean_env(home, GOCACHE=cache, GOPATH=str(home / "go"), CGO_ENABLED="0")
            out = subprocess.run([go, "build", "-o", str(binary), str(CLIENTS / "go_get.go")],
                                 capture_output=True, text=True, env=build_env, timeout=300)
            assert out.returncode == 0, out.stderr
        if explicit:
            env = clean_env(home, CLEARWALL_PROXY=proxy_url(proxy, creds), CLEARWALL_CA=str(proxy.ca_cert))
        else:
            env = clean_env(home, HTTPS_PROXY=proxy_url(proxy, creds), SSL_CERT_FILE=str(proxy.ca_cert))
        return run_json([str(binary), url], env)
    return run


go_default_transport = _go(explicit=False)
go_explicit_transport = _go(explicit=True)
