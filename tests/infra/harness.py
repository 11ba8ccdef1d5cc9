"""Runs the Pulumi program under Pulumi's official mock runtime and records every resource it registers.

The Pulumi CLI and engine cannot be installed on these machines; `pulumi.runtime.set_mocks` runs the program
in-process, offline. What is recorded is what the engine would receive: type, name, URN, parent, inputs with
Pulumi's secret markers intact, and property dependencies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from antenna_infra.config import load_stack_config
from antenna_infra.program import Components, build
from antenna_policies.rules import Resource, unwrap_secrets
from pulumi.runtime import mocks, rpc, settings

REPO = Path(__file__).resolve().parents[2]
SECRET_SIG = "4dabf18193072939515e22adb298388d"
# Values no test output or input may show in plain text.
TEST_SECRETS = {
    "antenna:myaccessidClientSecret": "myaccessid-client-secret-for-tests",
    "antenna:databaseAdminPassword": "database-admin-password-for-tests",
}

# Production keeps MyAccessID's secret in Keycloak's vault provider: only the database password remains.
PROD_SECRETS = {"antenna:databaseAdminPassword": TEST_SECRETS["antenna:databaseAdminPassword"]}

GATEWAY_POLICY = """
# The gateway reads its own secrets and signs SSH certificates.
path "antenna/data/sites/*" {
  capabilities = ["read"]
}
path "ssh-client-signer/sign/antenna-gateway" {
  capabilities = ["create", "update"]
}
"""
OPERATOR_POLICY = """
path "antenna/data/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/policies/acl/*" { capabilities = ["read", "list"] }
"""


@dataclass(frozen=True)
class Recorded:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    id: str
    inputs: Mapping[str, Any]
    deps: Mapping[str, tuple[str, ...]]
    ignore_changes: tuple[str, ...] = ()

    def view(self) -> Resource:
        """What a policy rule sees (secret values unwrapped, as Pulumi hands them to a policy pack)."""
        return Resource(type=self.type, name=self.name, urn=self.urn, props=unwrap_secrets(self.inputs), deps=self.deps)


@dataclass(frozen=True)
class Recording:
    resources: list[Recorded]
    components: Components

    def of_type(self, type_: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Recorded:
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        assert len(found) == 1, f"{len(found)} resources {type_} {name}"
        return found[0]

    def by_urn(self, urn: str) -> Recorded:
        return next(r for r in self.resources if r.urn == urn)

    def children(self, component: Recorded) -> list[Recorded]:
        return [r for r in self.resources if r.parent == component.urn]

    def views(self) -> list[Resource]:
        return [r.view() for r in self.resources if r.custom]


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


class _RecordingMonitor(mocks.MockMonitor):
    def __init__(self, mock: pulumi.runtime.Mocks) -> None:
        super().__init__(mock)
        self.records: list[Recorded] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.records.append(
                Recorded(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=bool(request.custom),
                    id=response.id,
                    inputs=rpc.deserialize_properties(request.object),
                    deps={key: tuple(deps.urns) for key, deps in request.propertyDependencies.items()},
                    ignore_changes=tuple(request.ignoreChanges),
                )
            )
        return response


def stack_file(stack: str) -> dict[str, Any]:
    """The `config:` of `infra/Pulumi.<stack>.yaml`, as committed."""
    return yaml.safe_load((REPO / "infra" / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))["config"]


def make_repo(root: Path, policies: Mapping[str, str] | None = None) -> Path:
    """A repository-shaped directory with Vault policies, Prometheus rules and a dashboard."""
    vault_dir = root / "policies" / "vault"
    vault_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (policies or {"antenna-gateway": GATEWAY_POLICY, "antenna-operator": OPERATOR_POLICY}).items():
        (vault_dir / f"{name}.hcl").write_text(text, encoding="utf-8")
    rules = root / "dashboards" / "prometheus"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "antenna.rules.yml").write_text(
        "groups:\n- name: antenna\n  rules:\n  - alert: GatewayDown\n    expr: up{job='antenna'} == 0\n",
        encoding="utf-8",
    )
    grafana = root / "dashboards" / "grafana"
    grafana.mkdir(parents=True, exist_ok=True)
    (grafana / "antenna-overview.json").write_text(json.dumps({"title": "Antenna"}), encoding="utf-8")
    return root


_LOOP: asyncio.AbstractEventLoop | None = None


def run_program(
    config: Mapping[str, Any], *, repo_root: Path, stack: str = "dev", secrets: Mapping[str, str] = TEST_SECRETS
) -> Recording:
    """Run `build()` under the mock runtime with this stack configuration; return what it registered."""
    # Pulumi's mock runtime runs on the current thread's event loop; an async test that ran before may have
    # closed it, so each program run gets a fresh one.
    global _LOOP  # noqa: PLW0603 - one loop for every program run of the session
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    asyncio.set_event_loop(_LOOP)
    mock = _Mocks()
    monitor = _RecordingMonitor(mock)
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mock, project="antenna", stack=stack, preview=False, monitor=monitor)
    values = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    values.update(secrets)
    pulumi.runtime.set_all_config(values, list(secrets))
    built: list[Components] = []

    @pulumi.runtime.test
    def program() -> None:
        stack_config, stack_secrets = load_stack_config()
        built.append(build(stack_config, stack_secrets, repo_root))

    program()
    return Recording(resources=list(monitor.records), components=built[0])


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """Every leaf `(path, value, under_secret_marker)` of an input value."""
    if isinstance(value, Mapping):
        if SECRET_SIG in value:
            for leaf_path, leaf, _ in walk(value.get("value"), path):
                yield leaf_path, leaf, True
            return
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")
    else:
        yield path, value, False
