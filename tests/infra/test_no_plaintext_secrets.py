"""No secret reaches the Pulumi engine in plain text: every secret input is marked secret (encrypted in state,
masked in output) or is a Vault reference. Checked on everything the program registers under the mock runtime
(the engine itself cannot run here).
"""

from __future__ import annotations

import re

import pytest

from tests.infra.harness import TEST_SECRETS, Recording, walk

_SECRETISH = re.compile(r"(secret|password|passwd|private_?key|token$|credential)", re.I)
# Inputs whose names look secret but hold none (a kind, a flag, a lifetime).
_NOT_SECRETS = re.compile(
    r"(tokenType|tokenPolicies|tokenTtl|tokenMaxTtl|tokenNoDefaultPolicy|bindSecretId|secretIdTtl|"
    r"secretIdNumUses|secretIdBoundCidrs|storeToken|addReadTokenRoleOnCreate|accessTokenLifespan)"
)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_known_secret_values_appear_only_under_the_secret_marker(stack: str, dev: Recording, prod: Recording) -> None:
    rec = dev if stack == "dev" else prod
    seen = 0
    for resource in rec.resources:
        for path, value, secret in walk(resource.inputs):
            if isinstance(value, str) and any(s in value for s in TEST_SECRETS.values()):
                assert secret, f"{resource.type} {resource.name}: {path} holds a secret in plain text"
                seen += 1
    # dev carries both secrets; prod only the database password (MyAccessID's is a Keycloak vault reference).
    assert seen == (2 if stack == "dev" else 1)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_secret_looking_input_is_secret_or_a_reference(stack: str, dev: Recording, prod: Recording) -> None:
    rec = dev if stack == "dev" else prod
    for resource in rec.resources:
        for path, value, secret in walk(resource.inputs):
            leaf = path.split(".")[-1]
            if not _SECRETISH.search(leaf) or _NOT_SECRETS.search(leaf) or value in (None, "", False, True):
                continue
            reference = isinstance(value, str) and value.startswith("${vault.")
            assert secret or reference, f"{resource.type} {resource.name}: {path} is not marked secret"
