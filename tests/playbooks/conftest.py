"""Fixtures of the playbook tests: the gateway package, and the whole site applied twice to a throwaway host."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.deploy.package import GatewayPackage, build_gateway_package
from tests.playbooks.site import SiteRun, free_ports, run_site, stack_variables, write_inventory
from tests.playbooks.throwaway_host import REPO_ROOT, ThrowawayHost, throwaway_host

# site.yml's groups that can run here (keycloak cannot: test_check_mode.py runs its role in check mode).
RUNNABLE_GROUPS = ("openbao", "gateway", "reverse_proxy", "alertmanager", "prometheus")


@dataclass
class AppliedSite:
    host: ThrowawayHost
    ports: dict[str, int]
    inventory: Path
    init_output: Path
    first: SiteRun
    second: SiteRun


@pytest.fixture(scope="session")
def gateway_package(tmp_path_factory: pytest.TempPathFactory) -> GatewayPackage:
    return build_gateway_package(REPO_ROOT, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def applied_site(gateway_package: GatewayPackage) -> Iterator[AppliedSite]:
    """Every runnable role applied to one fresh host, then applied again (the second run must change nothing)."""
    with throwaway_host("antenna-site") as host:
        ports = free_ports()
        init_output = host.run_dir / "openbao-init.json"
        variables = stack_variables(
            ports,
            wheel=gateway_package.wheel,
            requirements=gateway_package.requirements,
            init_output=init_output,
        )
        inventory = write_inventory(host.run_dir / "inventory.yml", host, RUNNABLE_GROUPS, variables)
        first = run_site(inventory)
        if not first.ok:
            pytest.fail(f"the first run of site.yml failed: {first.failures() or first.status}")
        second = run_site(inventory)
        yield AppliedSite(host, ports, inventory, init_output, first, second)
