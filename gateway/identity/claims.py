"""Claim mapping: a verified token's claims to a Principal (person, projects and roles).

Projects come from Keycloak group paths (``/projects/<p>``, ``/projects/<p>/pi``) and from AARC-G069
entitlements (``<namespace>:group:projects:<p>[:<subgroup>...][:role=<role>][#<authority>]``); which
sources count is configured. Anything that does not parse grants nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidToken
from gateway.identity.principal import Principal, Role
from gateway.settings import OIDCSettings

_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# RFC 8141 NSS characters less ':', which separates G069 segments.
_SEGMENT = re.compile(r"^[A-Za-z0-9\-._~%!$&'()*+,;=@/]+$")


@dataclass(frozen=True)
class Entitlement:
    """One parsed AARC-G069 group entitlement."""

    namespace: str
    groups: tuple[str, ...]
    """The group path: the group, then its subgroups."""
    role: str | None


def parse_entitlement(value: str, namespaces: Iterable[str]) -> Entitlement | None:
    """Parse ``value`` if it belongs to one of ``namespaces``; None when foreign or unparsable."""
    body = value.split("#", 1)[0]  # the group authority is deprecated and ignored
    for namespace in namespaces:
        prefix = f"{namespace}:group:"
        if len(body) <= len(prefix) or body[: len(prefix)].lower() != prefix.lower():
            continue
        segments = body[len(prefix) :].split(":")
        role = None
        if segments[-1].startswith("role="):
            role = segments.pop()[len("role=") :]
            if not role or not _SEGMENT.match(role):
                return None
        if not segments or not all(_SEGMENT.match(s) and not s.startswith("role=") for s in segments):
            return None
        return Entitlement(namespace=namespace, groups=tuple(segments), role=role)
    return None


def _grant(projects: dict[str, Role], project: str, role: Role) -> None:
    if _PROJECT.match(project) and projects.get(project) is not Role.PI:
        projects[project] = role


def projects_from_entitlements(values: Iterable[str], oidc: OIDCSettings) -> dict[str, Role]:
    """Projects granted by G069 entitlements: a subgroup implies its project; ``role=pi`` on the
    project group itself makes a PI; any role other than member or pi grants nothing."""
    projects: dict[str, Role] = {}
    for value in values:
        parsed = parse_entitlement(value, oidc.entitlement_namespaces)
        if parsed is None or len(parsed.groups) < 2:
            continue
        if parsed.groups[0] != oidc.entitlement_projects_group:
            continue
        if parsed.role not in (None, Role.MEMBER, Role.PI):
            continue
        is_pi = parsed.role == Role.PI and len(parsed.groups) == 2
        _grant(projects, parsed.groups[1], Role.PI if is_pi else Role.MEMBER)
    return projects


def projects_from_groups(paths: Iterable[str], oidc: OIDCSettings) -> dict[str, Role]:
    """Projects granted by Keycloak full group paths under the configured projects group."""
    prefix = oidc.projects_group.rstrip("/") + "/"
    projects: dict[str, Role] = {}
    for path in paths:
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        if not parts[0]:
            continue
        is_pi = len(parts) == 2 and parts[1] == "pi"
        # A deeper subgroup of a project still makes its members members of the project.
        _grant(projects, parts[0], Role.PI if is_pi else Role.MEMBER)
    return projects


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _dotted(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def principal_from_claims(claims: Mapping[str, Any], oidc: OIDCSettings) -> Principal:
    """Map verified claims to a Principal. Raises InvalidToken for a refused or missing person."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("token has no subject", reason="missing_sub")
    person_claim = claims.get(oidc.person_claim)
    person = (person_claim if isinstance(person_claim, str) and person_claim else subject).lower()
    refused = {p.lower() for p in oidc.refused_persons}
    if person in refused or subject.lower() in refused:
        raise InvalidToken(f"person {person!r} is never authorised", reason="refused_person")

    projects: dict[str, Role] = {}
    sources = [
        projects_from_groups(_strings(claims.get(oidc.groups_claim)), oidc) if "groups" in oidc.project_sources else {},
        projects_from_entitlements(_strings(claims.get(oidc.entitlements_claim)), oidc)
        if "entitlements" in oidc.project_sources
        else {},
    ]
    for source in sources:
        for project, role in source.items():
            _grant(projects, project, role)

    azp = claims.get("azp")
    jti = claims.get("jti")
    return Principal(
        person=person,
        subject=subject,
        projects=projects,
        roles=frozenset(_strings(_dotted(claims, oidc.roles_claim))),
        client_id=azp if isinstance(azp, str) else "",
        token_id=jti if isinstance(jti, str) else None,
    )
