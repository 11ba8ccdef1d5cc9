"""A gateway for HTTP-level tests: the real app, a real SQLite or PostgreSQL ledger, the ``local`` connector,
and tokens signed by the loopback IdP whose key set the gateway fetches over real HTTP.

The app is built with a ``DevMode`` only because production settings refuse the loopback IdP's
``http://`` issuer and the ``local`` connector; the key source is the IdP's HTTP key set, never the
development issuer, so every token goes through the production verifier and key cache.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.clock import Clock, SystemClock
from gateway.db import make_engine
from gateway.devmode import dev_mode, dev_site
from gateway.identity import DevIssuer, KeySetCache
from gateway.jobs.models import Job, JobState
from gateway.ledger.models import LedgerEntry
from gateway.migrations import migrate
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings
from tests.support.idp import LoopbackIdP


# People, as their MyAccessID identifiers (the gateway's person key).
def _person(name: str) -> str:
    """A MyAccessID-shaped identifier (64 hex digits), stable per name."""
    return hashlib.sha256(name.encode()).hexdigest() + "@myaccessid.org"


ALICE = _person("alice")
BOB = _person("bob")
PAT = _person("pat")
OSCAR = _person("oscar")
NOMAD = _person("nomad")
QUOTA_ADMIN = _person("quota-admin")
OPERATOR = _person("operator")

#: person → (projects and role in each, realm roles)
PEOPLE: dict[str, tuple[dict[str, str], list[str]]] = {
    ALICE: ({"demo": "member"}, []),
    BOB: ({"demo": "member"}, []),
    PAT: ({"demo": "pi"}, []),
    OSCAR: ({"other": "member"}, []),
    NOMAD: ({"demo": "member"}, []),  # a member with no account mapped at the site
    QUOTA_ADMIN: ({}, ["antenna-quota-admin"]),
    OPERATOR: ({}, ["antenna-operator"]),
}
ACCOUNTS = {ALICE: "alice", BOB: "bob", PAT: "pat", OSCAR: "oscar"}
SITE = "local"
GRANT = {"cpu-core-hours": "100", "gpu-hours": "10"}
SCRIPT = "#!/bin/bash\necho hello\n"


def job_body(**changes: Any) -> dict[str, Any]:
    """A valid job spec for the demo project on the local site's shared CPU partition."""
    body: dict[str, Any] = {
        "project": "demo",
        "site": SITE,
        "partition": "small",
        "script": SCRIPT,
        "name": "test",
        "time_limit": "00:10:00",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@functools.cache
def _dev_issuer() -> DevIssuer:
    # Never used to sign or verify here; DevMode needs one, and RSA key generation is slow.
    return DevIssuer("http://127.0.0.1:9/dev-issuer", clock=SystemClock())


@functools.cache
def _migrated_template() -> Path:
    """One migrated SQLite file per test process; each gateway starts from a copy (migrating costs ~0.2 s)."""
    folder = Path(tempfile.mkdtemp(prefix="antenna-api-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    engine = make_engine(f"sqlite:///{folder / 'antenna.db'}")
    migrate(engine)
    engine.dispose()
    return folder / "antenna.db"


def gateway_settings(
    data_dir: Path, issuer: str, *, database_url: str | None = None, **sections: dict[str, Any]
) -> Settings:
    """Settings for a test gateway: one ``local`` site shaped like ``antenna dev``'s, no background tasks."""
    site = {**dev_site(), **sections.pop("site", {})}
    site["options"] = sections.pop("site_options", {})
    database: dict[str, Any] = {"url": database_url}
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_template(), data_dir / "antenna.db")
        database = {"url": f"sqlite:///{data_dir / 'antenna.db'}", "migrate_on_start": False}
    values: dict[str, Any] = {
        "database": database,
        "oidc": {"issuer": issuer},
        "sites": {SITE: site},
        "forwarder": {"enabled": False, "uncertain_retry_seconds": 0.2},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return load_settings(None, **values)


@dataclass
class Gateway:
    app: FastAPI
    idp: LoopbackIdP
    client: httpx.AsyncClient
    period: dict[str, str] = field(default_factory=dict)
    """The seeded allocations' period: an allocation is identified by its start."""

    @property
    def rt(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def token(self, person: str, **claims: Any) -> str:
        projects, roles = PEOPLE[person]
        groups = [f"/projects/{p}" for p in projects] + [f"/projects/{p}/pi" for p, r in projects.items() if r == "pi"]
        defaults: dict[str, Any] = {
            "sub": person,
            "myaccessid_cuid": person,
            "preferred_username": person,
            "groups": groups,
            "realm_access": {"roles": roles},
        }
        return self.idp.token(**{**defaults, **claims})

    def auth(self, person: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(person)}", **headers}

    async def seed(self) -> None:
        """The demo and other projects' allocations and the site accounts, through the API itself."""
        now = self.rt.clock.now()
        self.period = {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=365)).isoformat()}
        for project in ("demo", "other"):
            for unit, amount in GRANT.items():
                r = await self.client.put(
                    f"/v1/projects/{project}/allocations/{SITE}",
                    json={"amount": amount, "unit": unit, **self.period},
                    headers=self.auth(QUOTA_ADMIN),
                )
                assert r.status_code == 200, r.text
        for person, account in ACCOUNTS.items():
            r = await self.client.put(
                f"/v1/people/{person}/accounts/{SITE}", json={"account": account}, headers=self.auth(OPERATOR)
            )
            assert r.status_code == 204, r.text

    async def submit(self, person: str = ALICE, *, key: str | None = None, **changes: Any) -> dict[str, Any]:
        headers = self.auth(person, **({"Idempotency-Key": key} if key else {}))
        r = await self.client.post("/v1/jobs", json=job_body(**changes), headers=headers)
        assert r.status_code == 202, r.text
        job: dict[str, Any] = r.json()
        return job

    async def balance(self, project: str = "demo", unit: str = "cpu-core-hours") -> dict[str, str]:
        r = await self.client.get(f"/v1/projects/{project}/balance", headers=self.auth(QUOTA_ADMIN))
        assert r.status_code == 200, r.text
        (line,) = [b for b in r.json()["balances"] if b["unit"] == unit and b["active"]]
        return {k: line[k] for k in ("granted", "charged", "reserved", "available", "overrun")}

    def counts(self) -> dict[str, int]:
        """Rows in the job table and the ledger: what a refused request must leave alone."""

        def read(session: Any) -> dict[str, int]:
            return {
                "jobs": session.scalar(select(func.count()).select_from(Job)),
                "entries": session.scalar(select(func.count()).select_from(LedgerEntry)),
            }

        return self.rt.db.run(read)

    async def ledger_state(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "demo": await self.balance("demo"),
            "demo-gpu": await self.balance("demo", "gpu-hours"),
        }

    async def job(self, job_id: str, person: str = PAT) -> dict[str, Any]:
        r = await self.client.get(f"/v1/jobs/{job_id}", headers=self.auth(person))
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def background_cycle(self) -> None:
        """One forwarder and one status-sync cycle, each in a fresh context like the app's own tasks
        (so nothing bound by the last request, such as its request id, leaks into their logs)."""
        await asyncio.create_task(self.rt.forwarder.run_once(), context=contextvars.Context())
        await asyncio.create_task(self.rt.sync.run_once(), context=contextvars.Context())

    async def drive_until(self, job_id: str, states: set[str], *, rounds: int = 400) -> dict[str, Any]:
        """Run forwarder and status-sync cycles until the job reaches one of ``states``.

        Bounded by a number of rounds (each yielding ~50 ms to the job's process), not a timed assertion.
        """
        for _ in range(rounds):
            await self.background_cycle()
            job = await self.job(job_id)
            if job["state"] in states:
                return job
            if JobState(job["state"]).is_final:
                raise AssertionError(f"job ended {job['state']} ({job['reason']}), expected one of {states}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached {states}; last state {job['state']}")


def build_app(
    data_dir: Path,
    issuer: str,
    *,
    clock: Clock | None = None,
    database_url: str | None = None,
    **sections: dict[str, Any],
) -> FastAPI:
    """The app, trusting ``issuer`` through its key set over HTTP. The caller closes ``app.state.runtime``."""
    settings = gateway_settings(data_dir, issuer, database_url=database_url, **sections)
    clock = clock or SystemClock()
    http = httpx.AsyncClient()
    keys = KeySetCache.from_settings(settings.oidc, http=http, clock=clock)
    return create_app(settings, dev=dev_mode(_dev_issuer(), data_dir), keys=keys, clock=clock, http=http)


@asynccontextmanager
async def open_gateway(
    data_dir: Path,
    idp: LoopbackIdP,
    *,
    clock: Clock | None = None,
    database_url: str | None = None,
    seed: bool = True,
    **sections: dict[str, Any],
) -> AsyncIterator[Gateway]:
    app = build_app(data_dir, idp.issuer, clock=clock, database_url=database_url, **sections)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            gateway = Gateway(app, idp, client)
            if seed:
                await gateway.seed()
            yield gateway
    finally:
        await app.state.runtime.aclose()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread (lifespan included); yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    for _ in range(3000):  # bounded wait for the start-up (key set fetch included)
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        raise AssertionError("the gateway did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
