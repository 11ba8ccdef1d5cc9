"""The parts the dashboards-against-Prometheus test runs: the gateway in a uvicorn thread, a real Prometheus.

The gateway is built the way ``antenna dev`` builds it (SQLite, local connectors, the development issuer), with
two local sites so that one can go down while the other works, and with the production key set cache
(fetching the issuer's JWKS over HTTP) so that key fetches are counted as in production.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from gateway.app import create_app
from gateway.clock import SystemClock
from gateway.devmode import dev_mode, dev_site, seed_demo
from gateway.identity import DevIssuer, KeySetCache
from gateway.metrics import Metrics
from gateway.runtime import DevMode, Runtime, build_runtime
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "dashboards" / "prometheus").glob("*.yml"))
SCRAPE_JOB = "antenna-gateway"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], *, deadline_seconds: float = 60.0, every: float = 0.2) -> None:
    """Poll ``check`` until it holds; fail with ``what`` if it never does (no timing is asserted)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(every)
    pytest.fail(f"gave up waiting for {what} after {deadline_seconds:.0f} s")


@dataclass
class Gateway:
    url: str
    runtime: Runtime
    mode: DevMode


@contextlib.contextmanager
def run_gateway(data_dir: Path) -> Iterator[Gateway]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{data_dir / 'antenna.db'}"},
        oidc={
            "issuer": f"{url}/dev-issuer",
            "max_token_lifetime_seconds": 86400,
            "jwks_refetch_cooldown_seconds": 1,
        },
        public_url=url,
        sites={"lumi": dev_site(), "lucia": dev_site()},
        # Quick retries so that an outage opens the site's circuit within seconds.
        forwarder={"poll_seconds": 0.2, "backoff_base_seconds": 0.2, "backoff_max_seconds": 1.0, "max_attempts": 100},
    )
    clock = SystemClock()
    mode = dev_mode(DevIssuer(settings.oidc.issuer, clock=clock, key_file=data_dir / "dev-issuer-key.pem"), data_dir)
    http = httpx.AsyncClient(timeout=5.0)
    metrics: list[Metrics] = []
    keys = KeySetCache.from_settings(
        settings.oidc, http=http, clock=clock, on_fetch=lambda outcome: metrics[0].jwks_fetches.labels(outcome).inc()
    )
    runtime = build_runtime(settings, dev=mode, clock=clock, keys=keys, http=http)
    metrics.append(runtime.metrics)
    # The runtime does not export site health yet (see the report): wire it as build_runtime should.
    runtime.metrics.watch_sites(runtime.health.is_up, settings.sites)
    seed_demo(runtime)  # the demo project's allocations and the developer's site accounts, as `antenna dev`
    app = create_app(settings, dev=mode, runtime=runtime)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    try:
        # Ready, not only alive: the key set comes from the gateway's own issuer, which the start-up's fetch
        # may have tried before the socket listened.
        wait_for("the gateway to be ready", lambda: httpx.get(f"{url}/readyz").status_code == 200)
        yield Gateway(url, runtime, mode)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Prometheus:
    url: str

    def _get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        result: list[dict[str, Any]] = self._get("/api/v1/query", **params)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)[
            "result"
        ]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self._get(f"/api/v1/label/{label}/values", **{"match[]": match})
        return values

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def run_prometheus(binary: Path, work: Path, target: str) -> Iterator[Prometheus]:
    """Prometheus on a loopback port with its own config and tsdb, scraping ``target`` every second."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": [target]}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"Prometheus exited: {(work / 'prometheus.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never became ready: {(work / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
