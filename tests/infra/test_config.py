"""Stack configuration: the committed `Pulumi.dev.yaml` / `Pulumi.prod.yaml` and what validation refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from antenna_infra.config import InfraConfigError, duration_seconds, parse_stack_config

from tests.infra.harness import stack_file


def antenna_keys(stack: str) -> dict[str, Any]:
    """`antenna:*` keys of a committed stack file, without the prefix (what the program validates)."""
    return {k.removeprefix("antenna:"): v for k, v in stack_file(stack).items() if k.startswith("antenna:")}


def test_committed_stacks_are_valid() -> None:
    dev = parse_stack_config(antenna_keys("dev"))
    prod = parse_stack_config(antenna_keys("prod"))
    assert dev.identity.myaccessid.is_acceptance
    assert not prod.identity.myaccessid.is_acceptance
    assert prod.identity.myaccessid.client_secret_vault_ref == "${vault.myaccessid_client_secret}"


def prod_with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(antenna_keys("prod"))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("identity.myaccessid.issuer", "https://proxy.acc.myaccessid.org", "acceptance instance"),
        ("gateway.image", "ghcr.io/antenna-be/antenna-gateway:latest", "pinned by digest"),
        ("secrets.database.sslmode", "require", "verify-full"),
        ("identity.portal_redirect_uris", ["http://portal.antenna.example/cb"], "https://"),
        ("identity.myaccessid.jwks_url", "http://proxy.myaccessid.org/OIDC/jwks", "https://"),
        ("gateway.replicas", 1, "greater than or equal to 2"),
        ("gateway.max_replicas", 2, "at least replicas"),
        ("gateway.database_url", "postgresql+psycopg://antenna:pw@db/antenna", "no password"),
        ("identity.lifetimes", {"access_token": "2h"}, "at most 1h"),
        ("identity.lifetimes", {"access_token": "five minutes"}, "not a duration"),
        ("identity.myaccessid.client_secret_vault_ref", "plain-secret-value", "vault reference"),
        ("identity.projects", [{"name": "a"}, {"name": "a"}], "unique"),
        ("identity.projects", [{"name": "Not A Name"}], "pattern"),
        ("identity.realm_typo", "antenna", "Extra inputs"),
    ],
)
def test_production_refuses(path: str, value: Any, message: str) -> None:
    with pytest.raises(InfraConfigError, match=message):
        parse_stack_config(prod_with(path, value))


def test_dev_may_use_the_acceptance_instance_and_a_tag() -> None:
    data = antenna_keys("dev")
    assert data["gateway"]["image"].endswith(":main")
    parse_stack_config(data)


def test_error_names_the_key() -> None:
    with pytest.raises(InfraConfigError, match=r"gateway\.replicas"):
        parse_stack_config(prod_with("gateway.replicas", 0))


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("10h", 36000), ("1h30m", 5400), ("45s", 45)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


def test_dev_needs_the_myaccessid_secret_as_a_pulumi_secret(repo_root) -> None:
    from tests.infra.harness import run_program

    with pytest.raises(Exception, match="myaccessidClientSecret"):
        run_program(
            stack_file("dev"),
            repo_root=repo_root,
            secrets={"antenna:databaseAdminPassword": "db-for-tests"},
        )
