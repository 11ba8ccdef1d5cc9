"""The secrets interface every connector uses; implementations hold values only as long as allowed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class SiteCredentials:
    """A site's credentials as stored under the site's KV path (e.g. ``jwt_key`` for slurmrestd).

    ``values`` is excluded from ``repr`` so a credential never reaches a log by accident.
    """

    site: str
    version: int
    values: Mapping[str, str] = field(repr=False)
    expires_at: datetime | None = None

    def get(self, name: str) -> str:
        return self.values[name]


class SecretStore(ABC):
    """Where the gateway gets site credentials and SSH certificates. Raises SecretsUnavailable."""

    @abstractmethod
    async def site_credentials(self, site: str) -> SiteCredentials:
        """The current credentials of ``site``; cached until their TTL, refreshed before expiry."""

    @abstractmethod
    async def sign_ssh_key(self, *, site: str, account: str, public_key: str) -> str:
        """An OpenSSH user certificate for ``public_key`` whose only principal is ``account``."""

    @abstractmethod
    def invalidate(self, site: str) -> None:
        """Forget the cached credentials of ``site`` (e.g. after the site refused them)."""

    @abstractmethod
    async def resolve_reference(self, reference: str) -> str:
        """The value behind a ``vault:<path>#<field>`` reference from the configuration."""

    @abstractmethod
    async def check(self) -> None:
        """Raise SecretsUnavailable with the reason if the store cannot serve new secrets now."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and stop background renewal."""
