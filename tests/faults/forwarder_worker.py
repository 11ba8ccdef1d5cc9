"""A forwarder process on its own, as a gateway replica runs it: the fault tests start it and kill it with SIGKILL.

``main(config)`` builds the database, the connectors and a Forwarder from a plain dict and delivers until
killed. It is started through a multiprocessing forkserver that has already imported this module, so a
start costs a fork, not an interpreter.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.connectors.health import SiteHealth
from gateway.connectors.registry import build_connectors
from gateway.db import Database, make_engine
from gateway.jobs.forwarder import Forwarder
from gateway.metrics import Metrics
from gateway.secrets.fake import FakeSecretStore
from gateway.settings import load_settings


def lumi_config(
    *, sites: dict[str, Any], database_url: str, jwt_key: Path, data_dir: Path, lease_seconds: float
) -> dict[str, Any]:
    """What ``main`` takes, for a forwarder of the stack's lumi (through whatever URL ``sites`` names)."""
    return {
        "settings": {
            "database": {"url": database_url},
            "sites": sites,
            "forwarder": {"batch_size": 4, "poll_seconds": 0.1, "backoff_base_seconds": 0.1},
        },
        "jwt_keys": {"lumi": str(jwt_key)},
        "data_dir": str(data_dir),
        "lease_seconds": lease_seconds,
        "max_in_flight": 4,
    }


def main(config: dict[str, Any]) -> None:
    secrets = FakeSecretStore()
    for site, key_file in config["jwt_keys"].items():
        secrets.put_site_credentials(site, {"jwt_key": base64.b64encode(Path(key_file).read_bytes()).decode()})
    asyncio.run(_run(config, secrets))


async def _run(config: dict[str, Any], secrets: FakeSecretStore) -> None:
    settings = load_settings(None, **config["settings"])
    clock = SystemClock()
    forwarder = Forwarder(
        db=Database(make_engine(settings.database.url, pool_size=4)),
        connectors=build_connectors(settings, secrets=secrets, data_dir=Path(config["data_dir"]), clock=clock),
        health=SiteHealth(clock),
        settings=settings.forwarder,
        clock=clock,
        metrics=Metrics(),
        lease=timedelta(seconds=config["lease_seconds"]),
        max_in_flight_per_site=config["max_in_flight"],
    )
    await forwarder.run_forever(asyncio.Event())
