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
from gateway.identity.dev_issuer import DemoPerson, DevSignIn
from gateway.identity.principal import ROLE_OPERATOR, ROLE_QUOTA_ADMIN
from gateway.jobs.models import SiteAccount
from gateway.ledger import service as ledger
from gateway.runtime import DevMode, Runtime
from gateway.settings import Settings, load_settings

DEMO_PROJECT = "demo"
OTHER_PROJECT = "other"
# Each role of the Antenna, to try on one machine: `antenna login` and the web page offer these people.
RESEARCHER = DemoPerson("alice@demo.antenna.dev", "Alice, researcher in demo", {DEMO_PROJECT: Role.MEMBER})
OUTSIDER = DemoPerson("bob@demo.antenna.dev", "Bob, researcher in another project", {OTHER_PROJECT: Role.MEMBER})
PI = DemoPerson("pat@demo.antenna.dev", "Pat, principal investigator of demo", {DEMO_PROJECT: Role.PI})
QUOTA_ADMIN = DemoPerson("quinn@demo.antenna.dev", "Quinn, allocation manager", roles=(ROLE_QUOTA_ADMIN,))
OPERATOR = DemoPerson("oscar@demo.antenna.dev", "Oscar, operator", roles=(ROLE_OPERATOR,))
DEMO_PEOPLE = (RESEARCHER, OUTSIDER, PI, QUOTA_ADMIN, OPERATOR)
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
    clock = clock or SystemClock()
    issuer = DevIssuer(settings.oidc.issuer, clock=clock, key_file=data_dir / "dev-issuer-key.pem")
    return DevSetup(settings, dev_mode(issuer, data_dir), url)


def dev_mode(issuer: DevIssuer, data_dir: Path) -> DevMode:
    """Development mode with its issuer, the demo people's sign-in, and the data folder."""
    return DevMode(issuer=issuer, sign_in=DevSignIn(issuer, DEMO_PEOPLE, clock=issuer.clock), data_dir=data_dir)


def seed_demo(rt: Runtime) -> None:
    """The demo projects' allocations and the demo people's site accounts, all this machine's user (idempotent)."""
    now = rt.clock.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)

    def work(session: Any) -> None:
        for site_name, site in rt.settings.sites.items():
            for who in DEMO_PEOPLE:
                if who.projects and session.get(SiteAccount, (who.person, site_name)) is None:
                    session.add(
                        SiteAccount(
                            person=who.person,
                            site=site_name,
                            account=getpass.getuser(),
                            updated_by="antenna dev",
                            updated_at=now,
                        )
                    )
            for project, unit in ((p, u) for p in (DEMO_PROJECT, OTHER_PROJECT) for u in sorted(site.units())):
                if not any(b.site == site_name and b.unit == unit for b in ledger.balances(session, project=project)):
                    ledger.set_allocation(
                        session,
                        project=project,
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


def dev_tokens(mode: DevMode, person: DemoPerson = RESEARCHER) -> dict[str, Any]:
    """Tokens for a demo person as the issuer's token endpoint would give them (what `antenna dev` signs in
    its own terminal with)."""
    return mode.sign_in.tokens(person.person)
