"""``antenna dev``: the whole gateway on one machine, on embedded defaults.

SQLite in a data folder, a ``local`` site whose partitions mimic real ones (LUMI-like shared CPU and GPU
partitions, an exclusive one), the development token issuer, and a demo project with an allocation.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.clock import Clock, SystemClock
from gateway.identity import DevIssuer, Role
from gateway.identity.principal import ROLE_OPERATOR, ROLE_QUOTA_ADMIN
from gateway.jobs.models import SiteAccount
from gateway.ledger import service as ledger
from gateway.runtime import DevMode, Runtime
from gateway.settings import Settings, load_settings

DEV_PERSON = "dev-researcher@antenna.dev"
DEMO_PROJECT = "demo"
EXAMPLE_JOB = """#!/bin/bash
# An example job: prints where it runs, works for a few seconds, and ends.
echo "hello from job $SLURM_JOB_ID on $(hostname)"
for step in 1 2 3; do echo "step $step"; sleep 1; done
echo done
"""


def dev_site() -> dict[str, Any]:
    lumi_small = {
        "kind": "max_share",
        "unit": "cpu-core-hours",
        "shares": [{"resource": "cores"}, {"resource": "memory_gb", "divide": 2, "ceil": True}],
    }
    lumi_small_g = {
        "kind": "max_share",
        "unit": "gpu-hours",
        "weight": "0.5",
        "shares": [
            {"resource": "cores", "divide": 8, "ceil": True},
            {"resource": "memory_gb", "divide": 64, "ceil": True},
            {"resource": "gpus"},
        ],
    }
    return {
        "title": "This machine (development)",
        "connector": "local",
        "status_interval_seconds": 1.0,
        "partitions": {
            "small": {
                "billing": lumi_small,
                "max_time_minutes": 60,
                "max_nodes": 1,
                "cores_per_node": 128,
                "memory_gb_per_node": 256,
                "description": "like LUMI small: shared, core-hours",
            },
            "small-g": {
                "billing": lumi_small_g,
                "max_time_minutes": 60,
                "max_nodes": 1,
                "cores_per_node": 64,
                "memory_gb_per_node": 512,
                "gpus_per_node": 8,
                "description": "like LUMI small-g",
            },
            "standard": {
                "billing": {"kind": "whole_node", "unit": "cpu-core-hours", "rate_per_node": 128},
                "max_time_minutes": 60,
                "max_nodes": 1,
                "cores_per_node": 128,
                "memory_gb_per_node": 256,
                "exclusive": True,
                "description": "like LUMI standard: whole nodes",
            },
        },
    }


@dataclass(frozen=True)
class DevSetup:
    settings: Settings
    mode: DevMode
    url: str


def dev_setup(
    data_dir: Path, *, host: str, port: int, config: Path | None = None, clock: Clock | None = None
) -> DevSetup:
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    overrides: dict[str, Any] = {
        "database": {"url": f"sqlite:///{data_dir / 'antenna.db'}"},
        "oidc": {"issuer": f"{url}/dev-issuer", "max_token_lifetime_seconds": 86400},
        "public_url": url,
        "logging": {"json": True, "level": "INFO"},
    }
    if config is None:
        overrides["sites"] = {"local": dev_site()}
        overrides["forwarder"] = {"poll_seconds": 0.2}
    settings = load_settings(config, **overrides)
    issuer = DevIssuer(settings.oidc.issuer, clock=clock or SystemClock(), key_file=data_dir / "dev-issuer-key.pem")
    return DevSetup(settings, DevMode(issuer=issuer, data_dir=data_dir), url)


def seed_demo(rt: Runtime) -> None:
    """The demo project's allocations and the developer's account mapping (idempotent)."""
    now = rt.clock.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)

    def work(session: Any) -> None:
        for site_name, site in rt.settings.sites.items():
            if session.get(SiteAccount, (DEV_PERSON, site_name)) is None:
                session.add(
                    SiteAccount(
                        person=DEV_PERSON,
                        site=site_name,
                        account=getpass.getuser(),
                        updated_by="antenna dev",
                        updated_at=now,
                    )
                )
            for unit in sorted(site.units()):
                if not any(
                    b.site == site_name and b.unit == unit for b in ledger.balances(session, project=DEMO_PROJECT)
                ):
                    ledger.set_allocation(
                        session,
                        project=DEMO_PROJECT,
                        site=site_name,
                        unit=unit,
                        amount=Decimal(1000),
                        start=start,
                        end=start + timedelta(days=366),
                        actor="antenna dev",
                        reason="demo allocation",
                        at=now,
                    )

    rt.db.run(work)


def dev_token(mode: DevMode, *, lifetime_seconds: int = 12 * 3600) -> str:
    return mode.issuer.mint(
        DEV_PERSON,
        projects={DEMO_PROJECT: Role.PI},
        roles=[ROLE_QUOTA_ADMIN, ROLE_OPERATOR],
        lifetime_seconds=lifetime_seconds,
    )
