"""Where the gateway's secrets live inside the KV v2 mount (documented in policies/vault/README.md), and the
``vault:<path>#<field>`` references the configuration uses instead of secret values."""

from __future__ import annotations

from gateway.errors import ConfigurationError


def site_path(site: str) -> str:
    """Where a site's credentials live inside the KV v2 mount (see policies/vault/README.md)."""
    return f"sites/{site}"


def parse_reference(reference: str) -> tuple[str, str]:
    """``vault:<path>#<field>`` -> (path, field). Raises ConfigurationError naming the reference."""
    body = reference.removeprefix("vault:")
    path, sep, field = body.partition("#")
    segments = path.split("/")
    if not reference.startswith("vault:") or not sep or not field or "" in segments or ".." in segments:
        raise ConfigurationError(f"{reference!r} is not a reference of the form vault:<path>#<field>")
    return path, field
