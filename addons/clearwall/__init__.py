"""Clearwall: a TLS-intercepting egress firewall for MCP servers, built as mitmproxy addons."""

__version__ = "0.1.0"
