"""Everything one gateway process runs, built from settings and wired together, with no web code.

``build_runtime`` is what ``create_app`` calls; tests and the CLI can build one without FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import redis.asyncio
from limits import RateLimitItemPerMinute, storage
from limits.aio import strategies
from limits.errors import StorageError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from gateway.clock import Clock, SystemClock
from gateway.connectors.base import Connector
from gateway.connectors.health import SiteHealth
from gateway.connectors.registry import Factory, build_connectors
from gateway.db import Database, make_engine
from gateway.errors import AntennaError, RateLimited
from gateway.identity import DevIssuer, KeySetCache, KeySource, TokenVerifier
from gateway.identity.dev_issuer import DevSignIn
from gateway.jobs.forwarder import Forwarder
from gateway.jobs.models import Job, OutboxEntry, ProjectSite
from gateway.jobs.service import JobService
from gateway.jobs.sync import StatusSync
from gateway.ledger import runs
from gateway.ledger.models import AccountKind, LedgerAccount
from gateway.ledger.reconcile import Reconciliation, reconcile_session
from gateway.metrics import LedgerFigures, Metrics, Snapshot
from gateway.migrations import migrate
from gateway.readiness import Readiness
from gateway.secrets import SecretStore
from gateway.secrets.database import pool_recycle_seconds, use_dynamic_credentials
from gateway.secrets.fake import FakeSecretStore
from gateway.secrets.vault import VaultSecretStore
from gateway.settings import LimitsSettings, Settings
from gateway.supervision import Supervisor

log = logging.getLogger("antenna")
LIMITER_RETRY_SECONDS = 10.0  # how long requests go unlimited after the rate-limit storage failed


@dataclass(frozen=True)
class DevMode:
    """Only ``antenna dev`` creates one: the development issuer and the data folder."""

    issuer: DevIssuer
    sign_in: DevSignIn
    data_dir: Path


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    db: Database
    metrics: Metrics
    verifier: TokenVerifier
    keys: KeySource
    jobs: JobService
    connectors: dict[str, Connector]
    health: SiteHealth
    forwarder: Forwarder
    sync: StatusSync
    secrets: SecretStore
    http: httpx.AsyncClient
    limiter: _Limiter
    supervisor: Supervisor
    readiness: Readiness
    _stop: asyncio.Event
    dev: DevMode | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _limiter_warned_at: float = float("-inf")
    _limiter_down_until: float = float("-inf")
    _reconciling: asyncio.Task[None] | None = None
    _exported_reconciliation: set[tuple[str, str, str]] = field(default_factory=set)

    async def rate_limit(self, kind: str, person: str, per_minute: int) -> None:
        """Count a request of ``person``; RateLimited past ``per_minute``. Never blocks the event loop: the
        storage (Redis between replicas) is asked through its asyncio client."""
        item = RateLimitItemPerMinute(per_minute)
        now = self.clock.now().timestamp()
        if now < self._limiter_down_until:
            return
        try:
            if await self.limiter.strategy.hit(item, kind, person):
                return
            reset = (await self.limiter.strategy.get_window_stats(item, kind, person)).reset_time
        except StorageError as exc:
            # Redis down must not take submissions down with it: the limits are for fairness, the ledger
            # (in PostgreSQL) is what guards the allocations. Each request would otherwise wait out the
            # storage's timeout, so it is left alone for a while; said once a minute, not once a request.
            self._limiter_down_until = now + LIMITER_RETRY_SECONDS
            if now - self._limiter_warned_at >= 60:
                self._limiter_warned_at = now
                log.warning(
                    "rate-limit storage unavailable: requests are not limited",
                    extra={"error": type(exc.storage_error).__name__, "retry_in_seconds": LIMITER_RETRY_SECONDS},
                )
            return
        retry = max(1, int(reset - now) + 1)
        raise RateLimited(f"too many {kind}: at most {per_minute} a minute", retry_after=retry)

    def log_refusal(self, reason: str, detail: str) -> None:
        log.info("token refused", extra={"reason": reason, "detail": detail})

    def snapshot(self) -> Snapshot:
        """Database figures for the metrics scrape (one short read transaction)."""
        now = self.clock.now()

        def read(session: Session) -> Snapshot:
            accounts = session.scalars(
                select(LedgerAccount).where(
                    LedgerAccount.kind.in_([AccountKind.ALLOCATION.value, AccountKind.OVERRUN.value])
                )
            ).all()
            overruns = {
                (a.project, a.site, a.unit, a.period_start): a.charged
                for a in accounts
                if a.kind == AccountKind.OVERRUN.value
            }
            ledger = [
                LedgerFigures(
                    a.project,
                    a.site,
                    a.unit,
                    a.granted,
                    a.reserved,
                    a.charged,
                    overruns.get((a.project, a.site, a.unit, a.period_start), 0),
                    a.period_start <= now < a.period_end,
                )
                for a in accounts
                if a.kind == AccountKind.ALLOCATION.value
            ]
            jobs = [
                (site, partition, state, int(n))
                for site, partition, state, n in session.execute(
                    select(Job.site, Job.partition, Job.state, func.count()).group_by(
                        Job.site, Job.partition, Job.state
                    )
                )
            ]
            backlog = [
                (site, int(n), max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
                for site, n, oldest in session.execute(
                    select(OutboxEntry.site, func.count(), func.min(OutboxEntry.created_at))
                    .where(OutboxEntry.done_at.is_(None))
                    .group_by(OutboxEntry.site)
                )
            ]
            return Snapshot(ledger, jobs, backlog)

        return self.db.run(read)

    async def reconcile(self, site: str, *, start: datetime, end: datetime) -> Reconciliation:
        """Compare the ledger with ``site``'s accounting for ``[start, end)`` and log what was found.

        Reads only: the schedule (``reconcile_due``) records the result for the metric; an operator's run
        over another window (``antenna admin reconcile``) does not replace it."""
        partitions = self.settings.sites[site].partitions

        def project_accounts(session: Session) -> dict[str, str]:
            """The site's Slurm accounts of the projects with an allocation there (by default the project's
            name), to their project."""
            mapped = session.scalars(select(ProjectSite).where(ProjectSite.site == site))
            projects = session.scalars(select(LedgerAccount.project).where(LedgerAccount.site == site)).all()
            return {p: p for p in projects if p} | {row.project_account: row.project for row in mapped}

        by_account = await asyncio.to_thread(self.db.run, project_accounts)
        records = await self.connectors[site].usage(start=start, end=end, accounts=sorted(by_account))

        def compare(session: Session) -> Reconciliation:
            return reconcile_session(
                session,
                site=site,
                start=start,
                end=end,
                site_records=records,
                projects_by_account=by_account,
                formulas={name: p.billing for name, p in partitions.items()},
            )

        result = await asyncio.to_thread(self.db.run, compare)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "reconciliation", extra={"site": site, "summary": result.summary()})
        return result

    async def reconcile_due(self) -> dict[str, Reconciliation]:
        """Reconcile each site whose last run, by any replica, is an interval old, over the configured window;
        then export every site's last recorded totals. A site that cannot answer is logged, and tried again
        at the next tick of any replica."""
        cfg = self.settings.reconciliation
        now = self.clock.now()
        end = now - timedelta(minutes=cfg.settle_lag_minutes)
        start = end - timedelta(hours=cfg.window_hours)
        interval = timedelta(seconds=cfg.interval_seconds)
        owner = self.forwarder.worker  # this process, as its forwarder names it in the outbox's leases
        results: dict[str, Reconciliation] = {}
        for site in self.connectors:
            # The lease outlasts any sane run; a replica that died mid-run is replaced when it expires.
            take = functools.partial(runs.claim, site=site, owner=owner, now=now, interval=interval, lease=interval / 2)
            give_back = functools.partial(runs.release, site=site, owner=owner)
            if not await asyncio.to_thread(self.db.run, take):
                continue
            try:
                result = await self.reconcile(site, start=start, end=end)
            except (AntennaError, OSError, TimeoutError) as exc:
                detail = exc.detail if isinstance(exc, AntennaError) else f"{type(exc).__name__}: {exc}"
                log.warning("reconciliation failed", extra={"site": site, "error": detail})
                await asyncio.to_thread(self.db.run, give_back)
                continue
            except asyncio.CancelledError:
                # Shutdown: let another replica run it now rather than after the lease, but never hold the
                # shutdown for it (a database that does not answer leaves the lease to expire instead).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.to_thread(self.db.run, give_back), timeout=2)
                raise
            results[site] = result
            record = functools.partial(runs.finish, site=site, owner=owner, began=now, totals=result.totals)
            if not await asyncio.to_thread(self.db.run, record):
                log.warning("reconciliation outlasted its lease; another replica's result stands", extra={"site": site})
        recorded = await asyncio.to_thread(self.db.run, runs.latest)
        self._export_reconciliation([t for t in recorded if t.site in self.connectors])  # not sites since removed
        return results

    def _export_reconciliation(self, totals: list[runs.SiteTotal]) -> None:
        """Set the gauge to the recorded totals, and drop series no run reports any more (a project whose
        allocation ended must not go on alerting)."""
        gauge = self.metrics.reconciliation_difference
        current = {(t.project, t.site, t.unit): t.delta for t in totals}
        for labels in self._exported_reconciliation - current.keys():
            gauge.remove(*labels)
        for labels, delta in current.items():
            gauge.labels(*labels).set(float(delta))
        self._exported_reconciliation = set(current)

    async def _reconcile_forever(self) -> None:
        # At once, then every quarter interval: the run itself happens once an interval across replicas
        # (reconcile_due), but a replica that starts, or whose peer that ran it stopped, must not wait long.
        tick = self.settings.reconciliation.interval_seconds / 4
        while not self._stop.is_set():
            try:
                await self.reconcile_due()
            except Exception as exc:  # a bug or a database failover: say so, keep the schedule (the alert needs it)
                self.supervisor.failed("reconciliation", exc)
            else:
                self.supervisor.beat("reconciliation")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=tick)

    async def start_background(self) -> None:
        """Readiness, the forwarder, the status sync and reconciliation, each restarted by the supervisor if it
        ends."""
        self._tasks.append(self.supervisor.spawn("readiness", lambda: self.readiness.run_forever(self._stop)))
        if self.settings.forwarder.enabled:
            self._tasks.append(self.supervisor.spawn("forwarder", lambda: self.forwarder.run_forever(self._stop)))
            owner = self.forwarder.worker  # this process, as its leases name it
            sync = functools.partial(self.sync.run_forever, self._stop, owner=owner)
            self._tasks.append(self.supervisor.spawn("status-sync", sync))
            if self.settings.reconciliation.enabled:
                self._reconciling = self.supervisor.spawn("reconciliation", self._reconcile_forever)
                self._tasks.append(self._reconciling)

    async def aclose(self) -> None:
        self._stop.set()
        if self._reconciling is not None:
            # It only reads: cut a run short rather than let a slow site outlast the shutdown grace period.
            self._reconciling.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connector in self.connectors.values():
            await connector.aclose()
        await self.secrets.aclose()
        await self.http.aclose()
        if self.limiter.pool is not None:
            await self.limiter.pool.aclose()
        self.db.dispose()


@dataclass(frozen=True)
class _Limiter:
    strategy: strategies.RateLimiter
    pool: redis.asyncio.ConnectionPool | None  # ours to close: its connections belong to this event loop


def _limiter(settings: LimitsSettings) -> _Limiter:
    """Counters in the process, or shared by the replicas (Redis), namespaced by ``storage_key_prefix``
    and raising StorageError (not the driver's own exceptions) when the storage is unreachable.

    The asyncio storage of the same scheme (``async+redis://``, ``async+memory://``): requests are limited on
    the event loop without a thread hop, and a slow Redis holds only the requests that wait for it."""
    uri = f"async+{settings.storage_uri}"
    if not settings.storage_uri.split(":", 1)[0].startswith("redis"):
        return _Limiter(strategies.MovingWindowRateLimiter(storage.storage_from_string(uri)), None)
    # Short socket timeouts: a Redis that stops answering (not one that refuses) must not hold requests.
    pool = redis.asyncio.ConnectionPool.from_url(
        settings.storage_uri,
        socket_connect_timeout=settings.storage_timeout_seconds,
        socket_timeout=settings.storage_timeout_seconds,
    )
    store = storage.storage_from_string(
        uri,
        key_prefix=settings.storage_key_prefix,
        wrap_exceptions=True,
        implementation="redispy",  # redis-py's asyncio client, already a dependency
        connection_pool=pool,  # type: ignore[arg-type]  # passed through to redis-py's client
    )
    return _Limiter(strategies.MovingWindowRateLimiter(store), pool)


def _engine(settings: Settings, vault: VaultSecretStore | None) -> Engine:
    """The database engine; with ``vault.database_role`` it logs in with Vault's short-lived credentials."""
    database = settings.database
    if vault is None or not settings.vault.database_role:
        return make_engine(database.url, pool_size=database.pool_size, timeouts=database.timeouts())
    credentials = vault.database_credentials_blocking()
    engine = make_engine(
        database.url,
        pool_size=database.pool_size,
        timeouts=database.timeouts(),
        max_overflow=10,
        pool_recycle=pool_recycle_seconds(credentials.lease_seconds, 2 / 3),
    )
    use_dynamic_credentials(engine, vault)
    return engine


def build_runtime(
    settings: Settings,
    *,
    dev: DevMode | None = None,
    clock: Clock | None = None,
    secrets: SecretStore | None = None,
    keys: KeySource | None = None,
    connector_factories: dict[str, Factory] | None = None,
    http: httpx.AsyncClient | None = None,
) -> Runtime:
    """Build every part. Refuses production settings that only development may use."""
    if dev is None:
        settings.check_production()
    clock = clock or SystemClock()
    vault: VaultSecretStore | None = None
    if secrets is None:
        if settings.vault.enabled:
            vault = VaultSecretStore.from_settings(settings.vault, clock=clock, sites=list(settings.sites))
            secrets = vault
        else:
            secrets = FakeSecretStore(clock=clock)
    db = Database(_engine(settings, vault), busy_retries=settings.database.sqlite_busy_retries)
    if settings.database.migrate_on_start:
        migrate(db.engine)
    http = http or httpx.AsyncClient(timeout=settings.oidc.http_timeout_seconds)
    runtime_holder: list[Runtime] = []
    metrics = Metrics(snapshot=lambda: runtime_holder[0].snapshot())  # noqa: PLW0108 - bound after construction

    def count_fetch(outcome: str) -> None:
        metrics.jwks_fetches.labels(outcome).inc()

    if keys is None:
        keys = (
            dev.issuer.key_source()
            if dev is not None
            else KeySetCache.from_settings(settings.oidc, http=http, clock=clock, on_fetch=count_fetch)
        )
    verifier = TokenVerifier(settings.oidc, keys=keys, clock=clock)
    data_dir = dev.data_dir if dev is not None else Path("var")
    connectors = build_connectors(
        settings, secrets=secrets, data_dir=data_dir, clock=clock, factories=connector_factories
    )
    health = SiteHealth(clock)
    metrics.watch_sites(health.is_up, settings.sites)
    if vault is not None:
        metrics.watch_vault(vault.metrics)
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    forwarder = Forwarder(
        db=db,
        connectors=connectors,
        health=health,
        settings=settings.forwarder,
        clock=clock,
        metrics=metrics,
        supervisor=supervisor,
    )
    # The API's routes wake this process's forwarder themselves: its notifications need not wake it again.
    jobs = JobService(db=db, settings=settings, clock=clock, origin=forwarder.worker)
    sync = StatusSync(
        db=db,
        connectors=connectors,
        health=health,
        settings=settings,
        clock=clock,
        metrics=metrics,
        supervisor=supervisor,
    )
    limiter = _limiter(settings.limits)
    runtime = Runtime(
        settings=settings,
        clock=clock,
        db=db,
        metrics=metrics,
        verifier=verifier,
        keys=keys,
        jobs=jobs,
        connectors=connectors,
        health=health,
        forwarder=forwarder,
        sync=sync,
        secrets=secrets,
        http=http,
        limiter=limiter,
        supervisor=supervisor,
        readiness=Readiness(db=db, keys=keys, secrets=secrets, supervisor=supervisor),
        _stop=stop,
        dev=dev,
    )
    runtime_holder.append(runtime)
    return runtime
