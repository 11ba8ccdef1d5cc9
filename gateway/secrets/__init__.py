"""Secrets the gateway needs to reach sites: an interface, a Vault (hvac) adapter and a fake."""

from gateway.secrets.base import SecretStore, SiteCredentials

__all__ = ["SecretStore", "SiteCredentials"]
