"""The ``antenna`` command. Exit codes: 0 ok, 1 failed, 2 usage, 3 refused by the gateway, 4 not signed in."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.cli.client import ApiClient, CliError, Profile, device_login, load_profile, profile_path, save_profile
from gateway.deploy.cli import make_deploy_app
from gateway.errors import AntennaError, ConfigurationError
from gateway.realm.cli import project_app, realm_app
from gateway.secrets.cli import vault_app

EXIT_FAILED, EXIT_REFUSED, EXIT_UNAUTHENTICATED = 1, 3, 4
FINAL = {"completed", "failed", "cancelled", "timeout", "rejected", "resolved"}
LOST_HELP = (
    "the gateway cannot tell whether the site has this job; its reservation stays held while the gateway "
    "keeps looking for it, and an operator resolves it if it does not turn up"
)

app = typer.Typer(
    help="Antenna: submit jobs to EuroHPC AI supercomputers within your project's allocation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
admin = typer.Typer(help="Allocation managers and operators.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.add_typer(config_app, name="config")
app.add_typer(realm_app(), name="realm", help="Check the live Keycloak realm against the identity contract.")
app.add_typer(project_app(), name="project", help="Put people in or out of a project's group in Keycloak.")
app.add_typer(
    make_deploy_app(), name="deploy", help="Deploy the stack: Pulumi (identity, secrets, gateway), Ansible (hosts)."
)
app.add_typer(vault_app(), name="vault", help="Bootstrap a development Vault; secret-ids; SSH account lists.")

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="ANTENNA_URL", help="the gateway's URL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="ANTENNA_CONFIG", help="the YAML configuration")]


@contextmanager
def _session(url: str | None) -> Iterator[ApiClient]:
    """A client for one command: failures become the CLI's exit codes, the connection is always closed."""
    client = ApiClient(load_profile(url, os.environ.get("ANTENNA_TOKEN")))
    try:
        yield client
    except CliError as exc:
        raise _fail(exc) from exc
    finally:
        client.close()


def _fail(exc: CliError) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}")
    if exc.problem.get("type", "").endswith("quota-exceeded"):
        err.print(
            f"  available {exc.problem.get('available')} {exc.problem.get('unit')}, "
            f"the job costs {exc.problem.get('price')}"
        )
    if exc.status == 401:
        return typer.Exit(EXIT_UNAUTHENTICATED)
    return typer.Exit(EXIT_REFUSED if exc.refused else EXIT_FAILED)


def _call(url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    with _session(url) as client:
        return client.json(method, path, **kwargs)


def _emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        out.print_json(json.dumps(data, default=str))
    else:
        out.print(table)


# --- running the gateway --------------------------------------------------------------------------------


@app.command()
def serve(config: ConfigOpt = None, host: str = "0.0.0.0", port: int = 8000) -> None:  # noqa: S104 - a server binds where told
    """Run the gateway (production): refuses development-only settings."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import configure_logging
    from gateway.settings import load_settings

    try:
        _refuse_dev_switch()
        settings = load_settings(config)
        configure_logging(settings.logging)
        application = create_app(settings)
    except (ConfigurationError, AntennaError) as exc:
        err.print(f"[red]refusing to start:[/red]\n{escape(exc.detail)}")
        raise typer.Exit(EXIT_FAILED) from exc
    uvicorn.run(application, host=host, port=port, log_config=None, proxy_headers=True)


def _cli_for_another_terminal() -> str:
    """``antenna`` if a new terminal finds it on its PATH; else this script's full path.

    ``uv run`` (what ``make dev`` uses) puts the project's environment first on the PATH of this process
    only, so the bare name would not be found from a second terminal.
    """
    venv_bin = str(Path(sys.prefix) / "bin")
    plain_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    if shutil.which("antenna", path=plain_path):
        return "antenna"
    return shlex.quote(shutil.which("antenna") or str(Path(venv_bin) / "antenna"))


_DEV_SWITCH = re.compile(r"^ANTENNA_DEV(ELOPMENT)?(_?MODE)?$", re.IGNORECASE)


def _refuse_dev_switch() -> None:
    """Development mode is not a setting: a variable that looks like a switch for it is refused, never ignored."""
    for name in sorted(os.environ):
        if _DEV_SWITCH.match(name):
            raise ConfigurationError(
                f"{name}: development mode cannot be enabled by configuration; only `antenna dev` runs it"
            )


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="where the SQLite ledger, job output and dev keys live")] = Path(
        "var/dev"
    ),
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ConfigOpt = None,
) -> None:
    """Everything on this machine: SQLite, the local connector, a development token issuer, a demo project."""
    import uvicorn

    from gateway.app import create_app
    from gateway.devmode import DEMO_PROJECT, EXAMPLE_JOB, dev_setup, dev_token, seed_demo
    from gateway.logs import configure_logging
    from gateway.runtime import build_runtime

    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print("[red]antenna dev serves on loopback only[/red]")
        raise typer.Exit(2)
    setup = dev_setup(data_dir.resolve(), host=host, port=port, config=config)
    configure_logging(setup.settings.logging, stream=open(setup.mode.data_dir / "gateway.log", "a"))  # noqa: SIM115, PTH123
    runtime = build_runtime(setup.settings, dev=setup.mode)
    seed_demo(runtime)
    token = dev_token(setup.mode)
    save_profile(Profile(url=setup.url, access_token=token, expires_at=time.time() + 12 * 3600))
    job = setup.mode.data_dir / "job.sh"
    job.write_text(EXAMPLE_JOB)
    site = next(iter(setup.settings.sites))
    cli = _cli_for_another_terminal()
    # Plain prints: the commands must stay on one line each, to be copied as printed.
    print(f"Antenna (development) at {setup.url}   logs: {setup.mode.data_dir / 'gateway.log'}")
    print(f"token (also saved for the CLI in {profile_path()}):\n{token}\n")
    print("Try, from another terminal:")
    print(f"  {cli} submit --site {site} --project {DEMO_PROJECT} --partition small {shlex.quote(str(job))} --wait")
    print(f"  {cli} balance --project {DEMO_PROJECT}")
    print(f"  {cli} jobs")
    sys.stdout.flush()
    uvicorn.run(create_app(setup.settings, dev=setup.mode, runtime=runtime), host=host, port=port, log_config=None)


@app.command()
def login(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Sign in with your federated identity (device authorization grant); tokens are kept with mode 0600."""
    target = url or load_profile().url

    def show(link: str, code: str) -> None:
        # With --json the prompt goes to stderr: stdout carries only the result document.
        (err if as_json else out).print(f"Open [bold]{link}[/bold] and confirm the code [bold]{code}[/bold]")

    try:
        profile = device_login(target, show=show)
    except CliError as exc:
        raise _fail(exc) from exc
    path = save_profile(profile)
    if as_json:
        _emit({"signed_in": True, "url": target, "profile": str(path)}, True)
    else:
        out.print(f"signed in; tokens saved in {path}")


# --- jobs -------------------------------------------------------------------------------------------------


def _job_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", "project", "site", "partition", "name", "state", "reserved", "charged", "created")
    for j in jobs:
        table.add_row(
            j["id"][:8],
            j["project"],
            j["site"],
            j["partition"],
            j["name"],
            j["state"],
            f"{j['reserved']} {j['unit']}",
            j["charged"] or "",
            j["created_at"][:19],
        )
    return table


@app.command()
def submit(
    script: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    site: Annotated[str, typer.Option(help="lumi, jupiter, lucia, ...")],
    project: Annotated[str, typer.Option()],
    partition: Annotated[str, typer.Option()] = "small",
    name: str | None = None,
    nodes: Annotated[int | None, typer.Option(help="default 1, or the script's #SBATCH --nodes")] = None,
    cores: int | None = None,
    memory_gb: int | None = None,
    gpus: Annotated[int | None, typer.Option(help="default 0, or the script's #SBATCH --gpus")] = None,
    time_limit: Annotated[
        str | None, typer.Option(help="HH:MM:SS or minutes; default the script's #SBATCH --time, else 00:10:00")
    ] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, allow-listed names only")] = None,
    workdir: str | None = None,
    idempotency_key: Annotated[str | None, typer.Option(help="resubmitting with the same key never doubles")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a batch script; it is priced and reserved against the project's allocation first. Its #SBATCH
    lines count as options: only what is given here is sent, so the two never contradict each other."""
    import uuid

    from gateway.jobs.directives import read_directives

    text = script.read_text()
    try:
        in_script = {d.name for d in read_directives(text)}
    except AntennaError:
        in_script = set()  # the gateway names what is wrong with the line
    if time_limit is None and "time" not in in_script:
        time_limit = "00:10:00"
    if name is None and "job-name" not in in_script:
        name = script.stem[:64]
    body: dict[str, Any] = {
        "project": project,
        "site": site,
        "partition": partition,
        "script": text,
        "environment": dict(item.split("=", 1) for item in env or []),
    }
    given = {
        "name": name,
        "nodes": nodes,
        "gpus": gpus,
        "time_limit": time_limit,
        "cores": cores,
        "memory_gb": memory_gb,
        "working_directory": workdir,
    }
    body.update({key: value for key, value in given.items() if value is not None})
    key = idempotency_key or str(uuid.uuid4())
    job = _call(url, "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
    if not wait:
        _emit(job, as_json, _job_table([job]))
        return
    final = _follow(url, job["id"], quiet=as_json)
    if as_json:
        _emit(final, True)
    if final["state"] != "completed":
        raise typer.Exit(EXIT_FAILED)


def _follow(url: str | None, job_id: str, *, quiet: bool) -> dict[str, Any]:
    from rich.live import Live
    from rich.spinner import Spinner

    state = ""
    spinner = Live(Spinner("dots", text="submitting"), console=err, transient=True, auto_refresh=not quiet)
    with _session(url) as client, spinner as live:
        while True:
            job: dict[str, Any] = client.json("GET", f"/v1/jobs/{job_id}")
            if job["state"] != state:
                state = job["state"]
                if not quiet:
                    err.print(f"{datetime.now(UTC):%H:%M:%S} job {job_id[:8]} {state}")
            live.update(Spinner("dots", text=f"{state} (reserved {job['reserved']} {job['unit']})"))
            if state in FINAL or state == "lost":  # lost: nothing the person can wait for here
                break
            time.sleep(1)
    if state == "lost":
        err.print(f"job {job_id} is lost: {LOST_HELP}")
    elif not quiet:
        charged = job["charged"] if job["charged"] is not None else "0"
        out.print(f"job {job_id} {state}: charged {charged} of {job['reserved']} {job['unit']} reserved")
    return job


@app.command()
def jobs(
    project: str | None = None,
    site: str | None = None,
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs (PIs: the project's)."""
    params = {
        k: v
        for k, v in {"project": project, "site": site, "state": state, "limit": limit, "cursor": cursor}.items()
        if v is not None
    }
    page = _call(url, "GET", "/v1/jobs", params=params)
    _emit(page, as_json, _job_table(page["jobs"]))
    if page["next_cursor"] and not as_json:
        err.print(f"more: --cursor {page['next_cursor']}")


@app.command()
def job(job_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """One job with its state history."""
    data = _call(url, "GET", f"/v1/jobs/{job_id}")
    table = _job_table([data])
    history = Table("state", "at", "detail")
    for event in data["history"]:
        history.add_row(event["state"], event["at"][:19], event["detail"])
    _emit(data, as_json, table)
    if not as_json:
        out.print(history)


@app.command()
def cancel(job_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a job (owner or PI)."""
    data = _call(url, "DELETE", f"/v1/jobs/{job_id}")
    _emit(data, as_json, _job_table([data]))


@app.command()
def output(job_id: str, stream: str = "stdout", url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The job's stdout or stderr, from the site."""
    with _session(url) as client:
        text = client.request("GET", f"/v1/jobs/{job_id}/output", params={"stream": stream}).text
    if as_json:
        _emit({"job_id": job_id, "stream": stream, "text": text}, True)
    else:
        sys.stdout.write(text)


# --- budgets ----------------------------------------------------------------------------------------------


@app.command()
def balance(project: Annotated[str, typer.Option()], url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The project's allocation per site and unit: granted, charged, reserved, available."""
    data = _call(url, "GET", f"/v1/projects/{project}/balance")
    table = Table("site", "unit", "period", "granted", "charged", "reserved", "available", "used", title=project)
    for b in data["balances"]:
        granted = Decimal(b["granted"])
        used = (Decimal(b["charged"]) + Decimal(b["reserved"])) / granted if granted else Decimal(0)
        bar = "█" * int(used * 20) + "░" * (20 - int(used * 20))
        period = f"{b['period_start'][:10]} → {b['period_end'][:10]}" + ("" if b["active"] else " (inactive)")
        table.add_row(
            b["site"], b["unit"], period, b["granted"], b["charged"], b["reserved"], b["available"], f"{bar} {used:.0%}"
        )
    _emit(data, as_json, table)


@app.command()
def usage(
    project: Annotated[str, typer.Option()],
    site: str | None = None,
    person: Annotated[str | None, typer.Option(help="one person's charges (PIs, quota admins)")] = None,
    start: str | None = None,
    end: str | None = None,
    period_start: Annotated[str | None, typer.Option(help="one allocation period, by its start")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV for spreadsheets")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="draw cumulative charge vs allocation per site (PNG)")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Charges by job and person (members: their own; PIs and quota admins: everyone's)."""
    if plot is not None:
        from gateway.cli.plot import write_usage_plot

        with _session(url) as client:
            balance_doc = client.json("GET", f"/v1/projects/{project}/balance")
            usage_doc = client.json("GET", f"/v1/projects/{project}/usage", params={"site": site} if site else {})
            try:
                lines = write_usage_plot(
                    plot, project=project, balance=balance_doc, usage=usage_doc, now=datetime.now(UTC), site=site
                )
            except CliError as exc:
                raise _fail(exc) from exc
        for line in lines:
            out.print(line)
        out.print(f"plot written to {plot}")
        return
    wanted = {"site": site, "person": person, "start": start, "end": end, "period_start": period_start}
    params = {k: v for k, v in wanted.items() if v}
    if csv:
        with _session(url) as client:
            text = client.request(
                "GET", f"/v1/projects/{project}/usage", params=params, headers={"Accept": "text/csv"}
            ).text
        sys.stdout.write(text)
        return
    data = _call(url, "GET", f"/v1/projects/{project}/usage", params=params)
    table = Table("at", "job", "person", "site", "unit", "kind", "amount", title=project)
    for line in data["lines"]:
        table.add_row(
            line["at"][:19],
            (line["job_id"] or "")[:8],
            line["person"] or "",
            line["site"],
            line["unit"],
            line["kind"],
            line["amount"],
        )
    _emit(data, as_json, table)
    if not as_json:
        for key, total in data["totals"].items():
            out.print(f"total {key}: {total}")


# --- administration ---------------------------------------------------------------------------------------


@admin.command("allocate")
def admin_allocate(
    project: Annotated[str, typer.Option()],
    site: Annotated[str, typer.Option()],
    unit: Annotated[str, typer.Option()],
    amount: Annotated[str, typer.Option(help="the whole grant for the period (not a delta)")],
    start: Annotated[str, typer.Option(help="ISO date-time")],
    end: Annotated[str, typer.Option(help="ISO date-time")],
    project_account: Annotated[str | None, typer.Option(help="the Slurm account at the site")] = None,
    reason: str = "",
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant, top up, shorten or end an allocation (quota admins)."""
    body = {"amount": amount, "unit": unit, "start": start, "end": end, "reason": reason}
    if project_account:
        body["project_account"] = project_account
    data = _call(url, "PUT", f"/v1/projects/{project}/allocations/{site}", json=body)
    _emit(data, as_json, None) if as_json else out.print(
        f"{project} at {site}: granted {data['granted']} {data['unit']}, available {data['available']}"
    )


@admin.command("map-account")
def admin_map_account(
    person: Annotated[str, typer.Option(help="the person's MyAccessID identifier")],
    site: Annotated[str, typer.Option()],
    account: Annotated[str, typer.Option(help="their account at the site")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Map a person to their account at a site (operators)."""
    _call(url, "PUT", f"/v1/people/{person}/accounts/{site}", json={"account": account})
    if as_json:
        _emit({"person": person, "site": site, "account": account}, True)
    else:
        out.print(f"{person} → {account} at {site}")


@admin.command("resolve")
def admin_resolve(
    job_id: Annotated[str, typer.Argument(help="the lost job")],
    reason: Annotated[str, typer.Option(help="why; kept in the ledger's journal")],
    charge: Annotated[str | None, typer.Option(help="charge this much (the site's own records)")] = None,
    void: Annotated[bool, typer.Option("--void", help="release the reservation: the job never ran")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a lost job: charge what the site's records say it ran, or void it (operators)."""
    body: dict[str, Any] = {"reason": reason, "void": void}
    if charge is not None:
        body["charge"] = charge
    data = _call(url, "POST", f"/v1/jobs/{job_id}/resolve", json=body)
    charged = data["charged"] if data["charged"] is not None else "0"
    _emit(data, as_json, None) if as_json else out.print(f"job {job_id} resolved: charged {charged} {data['unit']}")


@admin.command("reconcile")
def admin_reconcile(
    site: Annotated[str, typer.Option(help="the site whose accounting to compare")],
    config: ConfigOpt = None,
    days: Annotated[int, typer.Option(help="the window: the last N days")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Compare the ledger's charges with the site's own accounting (run on a gateway host, with its config)."""
    import asyncio
    from datetime import timedelta

    from gateway.runtime import build_runtime
    from gateway.settings import load_settings

    try:
        settings = load_settings(config)
        if site not in settings.sites:
            raise ConfigurationError(f"sites: no site {site!r}")
        runtime = build_runtime(settings)
    except AntennaError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(EXIT_FAILED) from exc
    end = datetime.now(UTC)

    async def run() -> Any:
        try:
            return await runtime.reconcile(site, start=end - timedelta(days=days), end=end)
        finally:
            await runtime.aclose()

    try:
        result = asyncio.run(run())
    except AntennaError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}")
        raise typer.Exit(EXIT_FAILED) from exc
    if as_json:
        _emit(
            {
                "ok": result.ok,
                "summary": result.summary(),
                "differences": [{**vars(d), "delta": d.delta} for d in result.differences],
            },
            True,
        )
    else:
        out.print(result.summary(), soft_wrap=True)
        table = Table("kind", "project", "unit", "job", "site jobs", "ledger", "site", "delta")
        for d in result.differences:
            table.add_row(
                d.kind.value,
                d.project or "",
                d.unit or "",
                (d.job_id or "")[:8],
                ",".join(d.site_job_ids),
                str(d.ledger_amount),
                str(d.site_amount),
                str(d.delta),
            )
        if result.differences:
            out.print(table)
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    dev_only: Annotated[bool, typer.Option("--dev", help="check for antenna dev")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate a configuration file as `antenna serve` would; every problem names its key."""
    from gateway.connectors.registry import check_sites
    from gateway.settings import load_settings

    try:
        if not dev_only:
            _refuse_dev_switch()
        settings = load_settings(file)
        if not dev_only:
            settings.check_production()
        check_sites(settings)
    except ConfigurationError as exc:
        if as_json:
            _emit({"file": str(file), "ok": False, "problems": exc.detail.splitlines()}, True)
        else:
            err.print(f"[red]{escape(str(file))}: invalid[/red]\n{escape(exc.detail)}")
        raise typer.Exit(EXIT_REFUSED) from exc
    if as_json:
        _emit({"file": str(file), "ok": True, "sites": sorted(settings.sites)}, True)
    else:
        out.print(f"{file}: ok ({len(settings.sites)} sites)")


def main() -> None:  # pragma: no cover - the console script
    app()
