"""A gateway wired to the test stack: the sites of policies/sites.stack.yaml with the real connectors, a fake
secrets store holding the clusters' JWT keys and an SSH CA the stack's sshd trusts, tokens from the loopback
IdP, and the real API driven over ASGI. The forwarder and the status sync run only when a test drives them.

The app is built with a ``DevMode`` only because production settings refuse the loopback IdP's ``http://``
issuer; every token still goes through the production verifier and key cache.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from fastapi import FastAPI

from gateway.app import create_app
from gateway.clock import Clock, FakeClock, SystemClock
from gateway.devmode import dev_mode
from gateway.identity import DevIssuer, KeySetCache
from gateway.jobs.invariants import check_jobs
from gateway.jobs.models import JobState
from gateway.ledger.service import check_invariants
from gateway.runtime import Runtime
from gateway.secrets import SecretStore
from gateway.secrets.fake import FakeSecretStore
from gateway.settings import Settings, load_settings
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

REPO = Path(__file__).resolve().parents[2]
STACK_SITES = REPO / "policies" / "sites.stack.yaml"
PROJECT = "aifa"
#: the project's Slurm account at each site (what the stack's test people are associated with)
PROJECT_ACCOUNTS = {"lumi": "project_465000001", "jupiter": "aifabe01", "lucia": "aifa001"}
GRANTS = {
    "lumi": {"cpu-core-hours": "5000", "gpu-hours": "500"},
    "jupiter": {"core-hours": "100000"},
    "lucia": {"buh": "50000"},
}


def person(name: str) -> str:
    """A MyAccessID-shaped identifier, stable per name."""
    return hashlib.sha256(f"stack-{name}".encode()).hexdigest() + "@myaccessid.org"


ALICE, BOB, DAVE, ZED = person("alice"), person("bob"), person("dave"), person("zed")
QUOTA_ADMIN, OPERATOR = person("quota-admin"), person("operator")
#: gateway person → their account at every site. dave has a Unix account but no Slurm association; zed has
#: no account at the sites at all.
ACCOUNTS = {ALICE: "alice", BOB: "bob", DAVE: "dave", ZED: "zed"}
ROLES = {QUOTA_ADMIN: ["antenna-quota-admin"], OPERATOR: ["antenna-operator"]}


def stack_sites(stack: SlurmStack, *, ssh_sites: Iterable[str] = (), **site_changes: dict[str, Any]) -> dict[str, Any]:
    """The ``sites`` section of policies/sites.stack.yaml pointed at this stack (its URLs, ports, host key).

    ``ssh_sites`` switches those sites to the ssh connector on their login node; ``site_changes`` are
    merged into a site's settings (e.g. ``lumi={"when_unavailable": "refuse"}``).
    """
    sites: dict[str, Any] = yaml.safe_load(STACK_SITES.read_text())["sites"]
    for name, site in sites.items():
        cluster = stack.cluster(name)
        if name in ssh_sites:
            site["connector"] = "ssh"
            site["options"] = {"status_account": site["options"]["status_account"]}
        login = {"host": stack.ssh.host, "port": stack.ssh.ports[name], "host_keys": [stack.ssh.host_public_key]}
        if site["connector"] == "slurmrestd":
            site["options"]["url"] = cluster.slurmrestd_url
            if "output_ssh" in site["options"]:
                site["options"]["output_ssh"].pop("known_hosts", None)
                site["options"]["output_ssh"].update(login)
        elif site["connector"] == "ssh":
            site["options"].pop("known_hosts", None)
            site["options"].update(login)
        for key, value in site_changes.get(name, {}).items():
            if isinstance(value, dict) and isinstance(site.get(key), dict):
                site[key] = {**site[key], **value}
            else:
                site[key] = value
    return sites


def stack_secrets(stack: SlurmStack, *, store: FakeSecretStore | None = None) -> FakeSecretStore:
    """A store holding every cluster's JWT key; the caller trusts its CA (``stack.trust_user_ca``)."""
    store = store or FakeSecretStore()
    for cluster in stack.clusters:
        store.put_site_credentials(cluster.name, {"jwt_key": base64.b64encode(cluster.jwt_key_bytes()).decode()})
    return store


@functools.cache
def _dev_issuer() -> DevIssuer:
    return DevIssuer("http://127.0.0.1:9/dev-issuer", clock=SystemClock())  # never signs or verifies here


def gateway_settings(
    idp: LoopbackIdP, sites: Mapping[str, Any], *, database_url: str, **sections: dict[str, Any]
) -> Settings:
    values: dict[str, Any] = {
        "database": {"url": database_url},
        "oidc": {"issuer": idp.issuer},
        "sites": dict(sites),
        "forwarder": {
            "enabled": False,
            "backoff_base_seconds": 0.2,
            "backoff_max_seconds": 2.0,
            "uncertain_retry_seconds": 0.5,
        },
        "limits": {"submissions_per_minute": 10_000, "requests_per_minute": 100_000},
        "logging": {"level": "WARNING"},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return load_settings(None, **values)


@dataclass
class StackGateway:
    app: FastAPI
    idp: LoopbackIdP
    client: httpx.AsyncClient
    stack: SlurmStack
    secrets: SecretStore  # FakeSecretStore unless the test passed a real one
    owners: dict[str, str] = field(default_factory=dict)  # job id → the person who submitted it

    @property
    def rt(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def auth(self, who: str) -> dict[str, str]:
        groups = [f"/projects/{PROJECT}"] if who in ACCOUNTS else []
        token = self.idp.token(
            sub=who,
            myaccessid_cuid=who,
            preferred_username=who,
            groups=groups,
            realm_access={"roles": ROLES.get(who, [])},
        )
        return {"Authorization": f"Bearer {token}"}

    def auth_of(self, job: Mapping[str, Any]) -> dict[str, str]:
        """Headers of the person who owns ``job``."""
        return self.auth(str(job["person"]))

    async def seed(self) -> None:
        """The project's allocation and Slurm account at every site, and each person's site account."""
        now = self.rt.clock.now()
        period = {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=365)).isoformat()}
        for site in self.rt.settings.sites:
            for unit, amount in GRANTS[site].items():
                r = await self.client.put(
                    f"/v1/projects/{PROJECT}/allocations/{site}",
                    json={"amount": amount, "unit": unit, "project_account": PROJECT_ACCOUNTS[site], **period},
                    headers=self.auth(QUOTA_ADMIN),
                )
                assert r.status_code == 200, r.text
            for who, account in ACCOUNTS.items():
                r = await self.client.put(
                    f"/v1/people/{who}/accounts/{site}", json={"account": account}, headers=self.auth(OPERATOR)
                )
                assert r.status_code == 204, r.text

    async def post_job(self, who: str = ALICE, **spec: Any) -> httpx.Response:
        body = {"project": PROJECT, "name": "stack-test", "time_limit": 5, **spec}
        return await self.client.post("/v1/jobs", json=body, headers=self.auth(who))

    async def submit(self, who: str = ALICE, **spec: Any) -> dict[str, Any]:
        r = await self.post_job(who, **spec)
        assert r.status_code == 202, r.text
        job: dict[str, Any] = r.json()
        self.owners[job["id"]] = who
        return job

    async def job(self, job_id: str, who: str | None = None) -> dict[str, Any]:
        r = await self.client.get(f"/v1/jobs/{job_id}", headers=self.auth(who or self.owners.get(job_id, ALICE)))
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def balance(self, site: str, unit: str) -> dict[str, Decimal]:
        r = await self.client.get(f"/v1/projects/{PROJECT}/balance", headers=self.auth(QUOTA_ADMIN))
        assert r.status_code == 200, r.text
        (line,) = [b for b in r.json()["balances"] if b["site"] == site and b["unit"] == unit and b["active"]]
        return {k: Decimal(str(line[k])) for k in ("granted", "charged", "reserved", "available", "overrun")}

    async def drive(
        self, job_ids: Iterable[str], until: set[str], *, rounds: int = 600, pause: float = 0.25
    ) -> dict[str, dict[str, Any]]:
        """Run forwarder and status-sync rounds until every job is in one of ``until`` (or final).

        Bounded by a number of rounds, not a timed assertion; a job ending outside ``until`` fails at once.
        """
        pending = list(job_ids)
        done: dict[str, dict[str, Any]] = {}
        for _ in range(rounds):
            await self.rt.forwarder.run_once()
            await self.rt.sync.run_once()
            for job_id in list(pending):
                job = await self.job(job_id)
                if job["state"] in until:
                    done[job_id] = job
                    pending.remove(job_id)
                elif JobState(job["state"]).is_final:
                    raise AssertionError(f"job {job_id} ended {job['state']} ({job['reason']}), expected {until}")
            if not pending:
                return done
            await anyio.sleep(pause)
            if isinstance(self.rt.clock, FakeClock):  # a test's clock moves with the rounds
                self.rt.clock.advance(pause)
        raise AssertionError(f"jobs never reached {until}: {pending}")

    def assert_sound(self) -> None:
        """The ledger's invariants hold, and every job is never sent, held, settled or resolved by hand."""
        problems = self.rt.db.run(lambda s: check_invariants(s) + check_jobs(s))
        assert problems == []

    def metric(self, name: str, **labels: str) -> float:
        value = self.rt.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def stack_gateway(
    stack: SlurmStack,
    idp: LoopbackIdP,
    data_dir: Path,
    *,
    sites: Mapping[str, Any] | None = None,
    database_url: str | None = None,
    secrets: SecretStore | None = None,
    clock: Clock | None = None,
    seed: bool = True,
    **sections: dict[str, Any],
) -> AsyncIterator[StackGateway]:
    """A gateway on the stack. With the fake store (the default) it holds the clusters' keys and its SSH CA is
    trusted by the stack's sshd while it runs; a real store is used as the caller filled it."""
    store: SecretStore
    if secrets is None or isinstance(secrets, FakeSecretStore):
        store = stack_secrets(stack, store=secrets)
        stack.trust_user_ca(store.ca_public_key)
    else:
        store = secrets
    settings = gateway_settings(
        idp,
        sites if sites is not None else stack_sites(stack),
        database_url=database_url or f"sqlite:///{data_dir / 'antenna.db'}",
        **sections,
    )
    clock = clock or SystemClock()
    http = httpx.AsyncClient()
    keys = KeySetCache.from_settings(settings.oidc, http=http, clock=clock)
    app = create_app(
        settings,
        dev=dev_mode(_dev_issuer(), data_dir),
        keys=keys,
        clock=clock,
        http=http,
        secrets=store,
    )
    app.state.runtime.health.cooldown = 0.5  # recover quickly in tests (production: 30 s)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", timeout=60
        ) as client:
            gateway = StackGateway(app, idp, client, stack, store)
            if seed:
                await gateway.seed()
            yield gateway
            gateway.assert_sound()  # every fault test ends with the ledger, and every job, accounted for
    finally:
        await app.state.runtime.aclose()
        if isinstance(store, FakeSecretStore):
            stack.distrust_user_ca(store.ca_public_key)


def site_jobs_named(stack: SlurmStack, cluster: str, names: Iterable[str]) -> dict[str, list[str]]:
    """Every job the cluster knows (controller or accounting) under each name: the site's own view."""
    wanted = set(names)
    found: dict[str, set[str]] = {name: set() for name in wanted}
    listed = stack.run(cluster, ["squeue", "--json"])
    assert listed.returncode == 0, listed.stderr
    for job in json.loads(listed.stdout)["jobs"]:
        if job["name"] in wanted:
            found[job["name"]].add(str(job["job_id"]))
    accounted = stack.run(
        cluster,
        [
            "sacct",
            "--allusers",
            "--allocations",
            "--noheader",
            "--parsable2",
            "--starttime=now-1days",
            f"--name={','.join(sorted(wanted))}",
            "--format=JobID,JobName",
        ],
    )
    assert accounted.returncode == 0, accounted.stderr
    for line in accounted.stdout.splitlines():
        job_id, _, name = line.partition("|")
        if name in wanted and re.fullmatch(r"\d+", job_id):
            found[name].add(job_id)
    return {name: sorted(ids) for name, ids in found.items()}
