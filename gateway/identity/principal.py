"""The principal: who a verified token speaks for, and what it may do in which project."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

ROLE_QUOTA_ADMIN = "antenna-quota-admin"
ROLE_OPERATOR = "antenna-operator"


class Role(StrEnum):
    """A person's role in a project; a principal investigator is also a member."""

    MEMBER = "member"
    PI = "pi"


@dataclass(frozen=True)
class Principal:
    person: str
    """Stable key of the person (the configured person claim, else ``sub``), lower-cased."""
    subject: str
    """The token's ``sub`` as issued."""
    projects: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType({}))
    roles: frozenset[str] = frozenset()
    """Realm roles, e.g. ``antenna-quota-admin``, ``antenna-operator``."""
    client_id: str = ""
    """The client the token was issued to (``azp``)."""
    token_id: str | None = None
    """The token's ``jti``, when it has one."""

    def __post_init__(self) -> None:
        # Read-only view, so a frozen principal cannot gain a project after verification.
        object.__setattr__(self, "projects", MappingProxyType(dict(self.projects)))

    def is_member(self, project: str) -> bool:
        return project in self.projects

    def is_pi(self, project: str) -> bool:
        return self.projects.get(project) is Role.PI

    def has_role(self, role: str) -> bool:
        return role in self.roles
