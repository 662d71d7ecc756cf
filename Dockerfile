# syntax=docker/dockerfile:1
# Clearwall proxy image.
#   docker build -t clearwall .
#   docker run --init -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/rules:/etc/clearwall/rules:ro" -v clearwall-ca:/var/lib/clearwall/ca \
#     -v clearwall-logs:/var/log/clearwall clearwall
# The CA is never part of the image: it lives in the /var/lib/clearwall/ca volume (created on
# first start if empty, or provided by the operator). See docs/DEPLOYMENT.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a self-contained virtualenv ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/clearwall
COPY pyproject.toml README.md ./
COPY addons/ addons/
# mitmproxy 12.2.x on Python 3.12: 12.3.x declares a certifi newer than some package
# mirrors carry. 12.x has the HTTP/2 request-smuggling fix that 11.0.2 lacks.
RUN /opt/clearwall/bin/pip install --no-cache-dir "mitmproxy==12.2.3" . \
    && /opt/clearwall/bin/clearwall --version

# --- runtime: the virtualenv, default rules and nothing else ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="clearwall" \
      org.opencontainers.image.description="TLS-intercepting egress firewall for MCP servers and AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/clearwall/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/clearwall \
    CLEARWALL_RULES=/etc/clearwall/rules \
    CLEARWALL_CA_DIR=/var/lib/clearwall/ca \
    CLEARWALL_LOG_DIR=/var/log/clearwall
RUN groupadd --system --gid "${UID}" clearwall \
    && useradd --system --uid "${UID}" --gid clearwall --home-dir /var/lib/clearwall \
       --no-create-home --shell /usr/sbin/nologin clearwall \
    && install -d -o clearwall -g clearwall -m 0750 /var/lib/clearwall /var/log/clearwall \
    && install -d -o clearwall -g clearwall -m 0700 /var/lib/clearwall/ca \
    && install -d -o clearwall -g clearwall -m 0755 /var/lib/clearwall/public \
    && install -d -m 0755 /etc/clearwall/rules /usr/local/share/clearwall
COPY --from=build /opt/clearwall /opt/clearwall
# Shipped default rules (deny by default); mount your own over /etc/clearwall/rules. The
# reference copy keeps the pattern libraries reachable from mounted rules:
#   filters: [{include: /usr/local/share/clearwall/rules/patterns/secrets.yaml}]
COPY rules/ /etc/clearwall/rules/
COPY rules/ /usr/local/share/clearwall/rules/
# For MCP server images: COPY --from=clearwall /usr/local/share/clearwall/install-ca.sh ...
COPY ca/install-ca.sh /usr/local/share/clearwall/install-ca.sh
USER ${UID}:${UID}
WORKDIR /var/lib/clearwall
VOLUME ["/var/lib/clearwall/ca", "/var/log/clearwall"]
EXPOSE 8080 9090
# No curl in slim images; the opener ignores any *_PROXY variable so the probe stays local.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9090/healthz', timeout=3).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["clearwall"]
CMD ["run", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9090", \
     "--rules", "/etc/clearwall/rules", "--ca-dir", "/var/lib/clearwall/ca", \
     "--log-dir", "/var/log/clearwall"]
