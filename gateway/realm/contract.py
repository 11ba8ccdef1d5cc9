"""What the live `antenna` realm must look like (identity-contract.md), and how a deviation is reported."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RealmContract:
    """Expected values; the defaults are identity-contract.md's, for the production MyAccessID."""

    realm: str = "antenna"
    idp_alias: str = "myaccessid"
    issuer: str = "https://proxy.myaccessid.org"
    audience: str = "antenna-gateway"
    # Clients whose tokens the gateway accepts (its `oidc.allowed_azp`).
    gateway_clients: tuple[str, ...] = ("antenna-cli", "antenna-portal")
    # Public, device authorization grant only.
    cli_client: str = "antenna-cli"
    grafana_client: str = "antenna-grafana"
    staff_roles: tuple[str, ...] = ("antenna-quota-admin", "antenna-operator")
    # Held through the /projects group; the post-broker-login flow refuses whoever lacks it.
    member_role: str = "antenna-member"
    projects_group: str = "/projects"
    # (user attribute, MyAccessID claim) imported read-only at each login.
    imported_attributes: tuple[tuple[str, str], ...] = (
        ("myaccessid_cuid", "sub"),
        ("eduperson_entitlement", "eduperson_entitlement"),
        ("eduperson_assurance", "eduperson_assurance"),
    )
    # The gateway refuses longer-lived tokens (oidc.max_token_lifetime_seconds).
    max_access_token_seconds: int = 3600
    # The IdP's client secret lives in Vault, referenced as ${vault.<key>}, never in Keycloak's database.
    require_vault_client_secret: bool = True
    # MyAccessID's test account: never authorised.
    test_account: str = "test@myaccessid.org"
    # Authenticators that link an existing account to a brokered identity by e-mail (account takeover).
    linking_authenticators: frozenset[str] = field(
        default_factory=lambda: frozenset({"idp-auto-link", "idp-email-verification"})
    )


@dataclass(frozen=True)
class Difference:
    """One setting of the live realm that differs from the contract."""

    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.setting}: expected {self.expected}, found {self.actual}"
