"""Identity: access-token verification, the issuer's key set, and claims mapped to a Principal."""

from gateway.identity.claims import (
    Entitlement,
    parse_entitlement,
    principal_from_claims,
    projects_from_entitlements,
    projects_from_groups,
)
from gateway.identity.dev_issuer import DevIssuer
from gateway.identity.keys import KeySetCache, KeySource, StaticKeySource, keys_from_jwks
from gateway.identity.principal import ROLE_OPERATOR, ROLE_QUOTA_ADMIN, Principal, Role
from gateway.identity.verifier import REFUSAL_REASONS, TokenVerifier, refusal_reason

__all__ = [
    "REFUSAL_REASONS",
    "ROLE_OPERATOR",
    "ROLE_QUOTA_ADMIN",
    "DevIssuer",
    "Entitlement",
    "KeySetCache",
    "KeySource",
    "Principal",
    "Role",
    "StaticKeySource",
    "TokenVerifier",
    "keys_from_jwks",
    "parse_entitlement",
    "principal_from_claims",
    "projects_from_entitlements",
    "projects_from_groups",
    "refusal_reason",
]
