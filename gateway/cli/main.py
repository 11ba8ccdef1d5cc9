"""The ``antenna`` command: the researcher's client. It speaks HTTP to a gateway and imports nothing of the
server or of the operator tools, whose commands join it when they are installed (``extensions.py``).

Exit codes: 0 ok, 1 failed (a job that failed, a gateway that cannot be reached or answers 5xx), 2 a usage
error, 3 refused by the gateway (quota, validation, permission, not found), 4 not signed in.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# typer vendors click (0.26+): its exceptions are the ones its commands raise.
from typer._click.exceptions import BadParameter, ClickException, NoArgsIsHelpError, UsageError

from gateway.cli import views
from gateway.cli.client import (
    ApiClient,
    CliError,
    device_login,
    forget_profile,
    load_profile,
    save_profile,
)
from gateway.cli.extensions import AntennaGroup

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNAUTHENTICATED = 1, 2, 3, 4
FINAL = {"completed", "failed", "cancelled", "timeout", "rejected", "resolved"}
LOST_HELP = (
    "the gateway cannot tell whether the site has this job; its reservation stays held while the gateway "
    "keeps looking for it, and an operator resolves it if it does not turn up"
)
POLL_FIRST, POLL_MAX = 1.0, 15.0  # seconds between looks at a job: quick at first, then backing off

app = typer.Typer(
    cls=AntennaGroup,
    help="Antenna: submit jobs to EuroHPC AI supercomputers within your project's allocation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich's help formatter imports a Markdown parser, a third of `antenna --help`'s start-up.
    rich_markup_mode=None,
)
admin = typer.Typer(help="Allocation managers and operators.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(admin, name="admin")

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="ANTENNA_URL", help="the gateway's URL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON document on stdout")]
WideOpt = Annotated[bool, typer.Option("--wide", help="every field, full ids and exact amounts")]


def emit(data: Any, as_json: bool, table: Table | None = None, *, wide: bool = False) -> None:
    if as_json or table is None:
        out.print_json(json.dumps(data, default=str))
    elif wide:  # every field whole: as wide as it takes, the terminal wraps what it must
        from rich.measure import Measurement

        natural = Measurement.get(out, out.options.update(width=100_000), table).maximum
        Console(file=out.file, width=max(natural, out.width), no_color=out.no_color).print(table)
    else:
        out.print(table)


@contextmanager
def _session(url: str | None) -> Iterator[ApiClient]:
    """A client for one command: failures become the CLI's exit codes, the connection is always closed."""
    try:
        client = ApiClient(load_profile(url, os.environ.get("ANTENNA_TOKEN")))
    except CliError as exc:
        raise _fail(exc) from exc
    try:
        yield client
    except CliError as exc:
        raise _fail(exc) from exc
    finally:
        client.close()


def _fail(exc: CliError) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    if exc.problem.get("type", "").endswith("quota-exceeded"):
        err.print(
            f"  available {exc.problem.get('available')} {exc.problem.get('unit')}, "
            f"the job costs {exc.problem.get('price')}"
        )
    if exc.status == 401:
        if "antenna login" not in str(exc):
            err.print("  sign in again: antenna login", highlight=False)
        return typer.Exit(EXIT_UNAUTHENTICATED)
    return typer.Exit(EXIT_REFUSED if exc.refused else EXIT_FAILED)


def _call(url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    with _session(url) as client:
        return client.json(method, path, **kwargs)


# --- job ids ----------------------------------------------------------------------------------------------

_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")


def _job_id(client: ApiClient, given: str) -> str:
    """The full id of the caller's job whose id starts with ``given`` (as tables show them, or longer)."""
    text = given.strip().lower()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if not _PREFIX.match(text):
        raise BadParameter(f"{given!r} is not a job id: the id's first characters (at least 4) or all of it")
    page = client.json("GET", "/v1/jobs", params={"id_prefix": text, "limit": 10})
    matches = [job["id"] for job in page["jobs"]]
    if not matches:
        raise CliError(f"no job of yours starts with {text}", refused=True, status=404)
    if len(matches) > 1:
        more = " and more" if page["next_cursor"] else ""
        raise BadParameter(f"{text} is ambiguous: it starts {', '.join(matches)}{more}; give more of it")
    return str(matches[0])


# --- signing in -------------------------------------------------------------------------------------------


@app.command()
def login(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Sign in with your federated identity (device authorization grant); tokens are kept with mode 0600."""
    try:
        target = url or load_profile().url
    except CliError:  # a damaged profile: signing in again is the cure, at the default address
        target = "http://127.0.0.1:8000"

    def show(link: str, code: str) -> None:
        # With --json the prompt goes to stderr: stdout carries only the result document.
        (err if as_json else out).print(f"Open [bold]{link}[/bold] and confirm the code [bold]{code}[/bold]")

    try:
        profile = device_login(target, show=show)
    except CliError as exc:
        raise _fail(exc) from exc
    path = save_profile(profile)
    with _session(target) as client:
        me = client.json("GET", "/v1/me")
    if as_json:
        emit({"signed_in": True, "url": target, "person": me["person"], "profile": str(path)}, True)
    else:
        out.print(f"signed in as {me['person']} at {target}; tokens saved in {path}")


@app.command()
def logout(as_json: JsonOpt = False) -> None:
    """Forget the tokens this machine keeps."""
    removed = forget_profile()
    if as_json:
        emit({"signed_out": True, "removed": removed}, True)
    else:
        out.print("signed out" if removed else "not signed in: nothing to forget")


@app.command()
def whoami(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Who the gateway says you are: your identifier, projects and roles, and your accounts at the sites."""
    me = _call(url, "GET", "/v1/me")
    if as_json:
        emit(me, True)
        return
    out.print(f"[bold]{escape(me['person'])}[/bold] at {escape(load_profile(url).url)}")
    projects = ", ".join(f"{p['project']} ({p['role']})" for p in me["projects"]) or "none"
    out.print(f"projects: {escape(projects)}")
    out.print(f"roles: {escape(', '.join(me['roles']) or 'none')}")
    accounts = ", ".join(f"{account} at {site}" for site, account in sorted(me["site_accounts"].items()))
    out.print(f"site accounts: {escape(accounts or 'none (an operator maps them)')}")


# --- jobs -------------------------------------------------------------------------------------------------

ScriptArg = Annotated[Path, typer.Argument(help="the batch script", exists=True, dir_okay=False, readable=True)]
SiteOpt = Annotated[str, typer.Option(help="lumi, jupiter, lucia, ... (`antenna sites` lists them)")]
ProjectOpt = Annotated[str, typer.Option(help="the project whose allocation pays")]
PartitionOpt = Annotated[str, typer.Option(help="the site's partition (`antenna sites`)")]
NodesOpt = Annotated[int | None, typer.Option(help="default 1, or the script's #SBATCH --nodes")]
GpusOpt = Annotated[int | None, typer.Option(help="default 0, or the script's #SBATCH --gpus")]
TimeOpt = Annotated[
    str | None, typer.Option(help="HH:MM:SS or minutes; default the script's #SBATCH --time, else 00:10:00")
]
EnvOpt = Annotated[list[str] | None, typer.Option(help="NAME=VALUE, allow-listed names only; repeatable")]


def _read_script(script: Path) -> str:
    try:
        return script.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadParameter(
            f"{script} is not UTF-8 text (byte {exc.start}): save it as UTF-8", param_hint="SCRIPT"
        ) from exc
    except OSError as exc:
        raise BadParameter(f"cannot read {script}: {exc.strerror}", param_hint="SCRIPT") from exc


def _named_in_script(text: str) -> set[str]:
    """The options the script's #SBATCH lines give, read as the gateway reads them (a module of the standard
    library only); a line it refuses is left to the gateway, which names it."""
    from gateway.errors import AntennaError
    from gateway.jobs.directives import read_directives

    try:
        return {directive.name for directive in read_directives(text)}
    except AntennaError:
        return set()


def _environment(pairs: list[str] | None) -> dict[str, str]:
    environment = {}
    for item in pairs or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadParameter(f"{item!r}: give NAME=VALUE", param_hint="--env")
        environment[name] = value
    return environment


def _job_body(
    script: Path,
    *,
    site: str,
    project: str,
    partition: str,
    name: str | None,
    nodes: int | None,
    cores: int | None,
    memory_gb: int | None,
    gpus: int | None,
    time_limit: str | None,
    env: list[str] | None,
    workdir: str | None,
) -> dict[str, Any]:
    """The request body; only what is given here, so the script's #SBATCH lines and the options never clash."""
    text = _read_script(script)
    in_script = _named_in_script(text)
    if time_limit is None and "time" not in in_script:
        time_limit = "00:10:00"
    if name is None and "job-name" not in in_script:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", script.stem)[:64] or "job"
    body: dict[str, Any] = {
        "project": project,
        "site": site,
        "partition": partition,
        "script": text,
        "environment": _environment(env),
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
    return body


@app.command()
def submit(
    script: ScriptArg,
    site: SiteOpt,
    project: ProjectOpt,
    partition: PartitionOpt = "small",
    name: str | None = None,
    nodes: NodesOpt = None,
    cores: int | None = None,
    memory_gb: int | None = None,
    gpus: GpusOpt = None,
    time_limit: TimeOpt = None,
    env: EnvOpt = None,
    workdir: str | None = None,
    idempotency_key: Annotated[str | None, typer.Option(help="resubmitting with the same key never doubles")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends; exit 1 if it does not complete")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Submit a batch script; it is priced and reserved against the project's allocation first. Its #SBATCH
    lines count as options: only what is given here is sent, so the two never contradict each other."""
    body = _job_body(
        script, site=site, project=project, partition=partition, name=name, nodes=nodes, cores=cores,
        memory_gb=memory_gb, gpus=gpus, time_limit=time_limit, env=env, workdir=workdir,
    )  # fmt: skip
    key = idempotency_key or str(uuid.uuid4())
    job = _call(url, "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
    if not wait:
        emit(job, as_json, views.jobs_table([job], wide=wide), wide=wide)
        return
    _end_as(_follow(url, job["id"], quiet=as_json), as_json)


@app.command()
def estimate(
    script: ScriptArg,
    site: SiteOpt,
    project: ProjectOpt,
    partition: PartitionOpt = "small",
    nodes: NodesOpt = None,
    cores: int | None = None,
    memory_gb: int | None = None,
    gpus: GpusOpt = None,
    time_limit: TimeOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What a job would cost at its time limit, and whether the project can afford it now; submits nothing."""
    body = _job_body(
        script, site=site, project=project, partition=partition, name=None, nodes=nodes, cores=cores,
        memory_gb=memory_gb, gpus=gpus, time_limit=time_limit, env=None, workdir=None,
    )  # fmt: skip
    price = _call(url, "POST", "/v1/estimates", json=body)
    if as_json:
        emit(price, True)
        return
    gpus_text = f", {price['gpus']} GPUs" if price["gpus"] else ""
    out.print(
        f"{price['price']} {price['unit']} for {price['time_limit_minutes']} min on {price['site']}/"
        f"{price['partition']} ({price['nodes']} node(s), {price['cores']} cores, {price['memory_gb']} GB{gpus_text})"
    )
    if price["available"] is None:
        out.print(f"{project} has no active allocation in {price['unit']} at {site}")
    else:
        verdict = "enough" if price["enough"] else "NOT enough"
        out.print(f"{project} has {price['available']} {price['unit']} available at {site}: {verdict}")


def _backoff(interval: float) -> float:
    return min(POLL_MAX, interval * 1.5)


def _follow(
    url: str | None, job_id: str, *, quiet: bool, on_poll: Callable[[ApiClient, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Look at the job until it ends (or is lost), every second at first, backing off to every 15 seconds."""
    from rich.live import Live
    from rich.spinner import Spinner

    state, interval = "", POLL_FIRST
    spinner = Live(Spinner("dots", text="waiting"), console=err, transient=True, auto_refresh=not quiet)
    with _session(url) as client, spinner as live:
        while True:
            job: dict[str, Any] = client.json("GET", f"/v1/jobs/{job_id}")
            if on_poll is not None:
                on_poll(client, job)
            if job["state"] != state:
                state, interval = job["state"], POLL_FIRST
                if not quiet:
                    err.print(f"{datetime.now(UTC):%H:%M:%S} job {job_id[: views.SHORT_ID]} {state}")
            live.update(Spinner("dots", text=f"{state} (reserved {job['reserved']} {job['unit']})"))
            if state in FINAL or state == "lost":  # lost: nothing the person can wait for here
                return job
            time.sleep(interval)
            interval = _backoff(interval)


def _end_as(job: dict[str, Any], as_json: bool) -> None:
    """Say how the job ended; exit 1 unless it completed, with where to look."""
    job_id, state = job["id"], job["state"]
    if as_json:
        emit(job, True)
    elif state == "lost":
        err.print(f"job {job_id} is lost: {LOST_HELP}")
    else:
        charged = job["charged"] if job["charged"] is not None else "0"
        exit_text = f" with exit code {job['exit_code']}" if job["exit_code"] not in (None, 0) else ""
        out.print(f"job {job_id} {state}{exit_text}: charged {charged} of {job['reserved']} {job['unit']} reserved")
    if state == "completed":
        return
    if state in ("failed", "timeout") and not as_json:
        err.print(f"its error output: antenna output {job_id[: views.SHORT_ID]} --stream stderr")
    if state == "rejected" and not as_json:
        err.print(f"the site refused it: {job['reason']}")
    raise typer.Exit(EXIT_FAILED)


@app.command()
def jobs(
    project: str | None = None,
    site: str | None = None,
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Your jobs, newest first (PIs: the project's)."""
    params = {
        k: v
        for k, v in {"project": project, "site": site, "state": state, "limit": limit, "cursor": cursor}.items()
        if v is not None
    }
    page = _call(url, "GET", "/v1/jobs", params=params)
    emit(page, as_json, views.jobs_table(page["jobs"], wide=wide), wide=wide)
    if page["next_cursor"] and not as_json:
        err.print(f"more: --cursor {page['next_cursor']}")


JobArg = Annotated[str, typer.Argument(help="the job's id, or its first characters (as tables show them)")]


@app.command()
def job(job_id: JobArg, url: UrlOpt = None, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """One job with its state history."""
    with _session(url) as client:
        data = client.json("GET", f"/v1/jobs/{_job_id(client, job_id)}")
    emit(data, as_json, views.jobs_table([data], wide=wide), wide=wide)
    if not as_json:
        out.print(views.history_table(data))
        if data["state"] == "lost":
            err.print(f"lost: {LOST_HELP}")


@app.command()
def cancel(
    job_id: JobArg,
    wait: Annotated[bool, typer.Option(help="follow the job until it has ended")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job (its owner or the project's PI): at once if the site has not got it yet, else the site is
    asked to stop it."""
    with _session(url) as client:
        full = _job_id(client, job_id)
        data = client.json("DELETE", f"/v1/jobs/{full}")
    if wait and data["state"] not in FINAL:
        data = _follow(url, full, quiet=True)
    if as_json:
        emit(data, True)
    elif data["state"] in FINAL:
        out.print(f"job {full} {data['state']}: charged {data['charged'] or '0'} {data['unit']}")
    else:
        out.print(
            f"cancel requested for job {full} ({data['state']} at {data['site']}); `--wait` follows it to its end"
        )


@app.command()
def output(
    job_id: JobArg,
    stream: Annotated[str, typer.Option(help="stdout or stderr")] = "stdout",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="print what the job writes until it ends")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The job's stdout or stderr, from the site."""
    if stream not in ("stdout", "stderr"):
        raise BadParameter("stdout or stderr", param_hint="--stream")
    if follow and as_json:
        raise UsageError("--follow streams text: leave out --json")
    with _session(url) as client:
        full = _job_id(client, job_id)
        if not follow:
            text = client.request("GET", f"/v1/jobs/{full}/output", params={"stream": stream}).text
            if as_json:
                emit({"job_id": full, "stream": stream, "text": text}, True)
            else:
                sys.stdout.write(text)
            return
    printed = 0

    def more(client: ApiClient, job: dict[str, Any]) -> None:
        nonlocal printed
        if job["site_job_id"] is None:
            return  # not at the site yet: no output to read
        text = client.request("GET", f"/v1/jobs/{full}/output", params={"stream": stream}).text
        sys.stdout.write(text[printed:])
        sys.stdout.flush()
        printed = max(printed, len(text))

    final = _follow(url, full, quiet=True, on_poll=more)
    err.print(f"job {full[: views.SHORT_ID]} {final['state']}")


# --- sites and budgets ------------------------------------------------------------------------------------


@app.command()
def sites(url: UrlOpt = None, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """The sites and their partitions: limits, units, health."""
    data = _call(url, "GET", "/v1/sites")
    emit(data, as_json, views.sites_table(data, wide=wide), wide=wide)


@app.command()
def balance(
    project: Annotated[str, typer.Option()], url: UrlOpt = None, as_json: JsonOpt = False, wide: WideOpt = False
) -> None:
    """The project's allocation per site and unit: granted, charged, reserved, available."""
    data = _call(url, "GET", f"/v1/projects/{project}/balance")
    emit(data, as_json, views.balance_table(data, wide=wide), wide=wide)


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
        Path | None, typer.Option("--plot", help="draw the allocation's use over time into this image (PNG, SVG, PDF)")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Charges by job and person (members: their own; PIs and quota admins: everyone's)."""
    if csv and (as_json or plot):
        raise UsageError("--csv is an output of its own: leave out --json and --plot")
    if plot is not None:
        _plot(url, plot, project=project, site=site, as_json=as_json)
        return
    wanted = {"site": site, "person": person, "start": start, "end": end, "period_start": period_start}
    params = {k: v for k, v in wanted.items() if v}
    if csv:
        with _session(url) as client:
            response = client.request(
                "GET", f"/v1/projects/{project}/usage", params=params, headers={"Accept": "text/csv"}
            )
        sys.stdout.write(response.text)
        return
    data = _call(url, "GET", f"/v1/projects/{project}/usage", params=params)
    emit(data, as_json, views.usage_table(data, wide=wide), wide=wide)
    if not as_json:
        for key, total in data["totals"].items():
            out.print(f"total {key}: {total}")


def _plot(url: str | None, path: Path, *, project: str, site: str | None, as_json: bool) -> None:
    from gateway.cli.plot import PlotError, plot_target, write_usage_plot

    try:
        target = plot_target(path)
    except PlotError as exc:
        raise BadParameter(str(exc), param_hint="--plot") from exc
    with _session(url) as client:
        balance_doc = client.json("GET", f"/v1/projects/{project}/balance")
        usage_doc = client.json("GET", f"/v1/projects/{project}/usage", params={"site": site} if site else {})
        try:
            lines = write_usage_plot(
                target, project=project, balance=balance_doc, usage=usage_doc, now=datetime.now(UTC), site=site
            )
        except PlotError as exc:  # the file could not be written after all (permissions, a full disk)
            raise BadParameter(str(exc), param_hint="--plot") from exc
    if as_json:
        emit({"plot": str(target), "summary": lines}, True)
        return
    for line in lines:
        out.print(line)
    out.print(f"plot written to {target}")


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
    if as_json:
        emit(data, True)
    else:
        out.print(f"{project} at {site}: granted {data['granted']} {data['unit']}, available {data['available']}")


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
        emit({"person": person, "site": site, "account": account}, True)
    else:
        out.print(f"{person} → {account} at {site}")


@admin.command("resolve")
def admin_resolve(
    job_id: Annotated[str, typer.Argument(help="the lost job's full id (as `admin reconcile` and alerts show it)")],
    reason: Annotated[str, typer.Option(help="why; kept in the ledger's journal")],
    charge: Annotated[str | None, typer.Option(help="charge this much (the site's own records)")] = None,
    void: Annotated[bool, typer.Option("--void", help="release the reservation: the job never ran")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a lost job: charge what the site's records say it ran, or void it (operators)."""
    if (charge is None) == (not void):
        raise UsageError("give --charge AMOUNT or --void")
    body: dict[str, Any] = {"reason": reason, "void": void}
    if charge is not None:
        body["charge"] = charge
    with _session(url) as client:
        full = _job_id(client, job_id)
        data = client.json("POST", f"/v1/jobs/{full}/resolve", json=body)
    charged = data["charged"] if data["charged"] is not None else "0"
    if as_json:
        emit(data, True)
    else:
        out.print(f"job {full} resolved: charged {charged} {data['unit']}")


def _moment(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadParameter(f"{value!r}: give an ISO date or date-time, e.g. 2026-11-01", param_hint=option) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@admin.command("reconcile")
def admin_reconcile(
    site: Annotated[str, typer.Option(help="the site whose accounting to compare")],
    since: Annotated[str | None, typer.Option(help="from this ISO date(-time), UTC unless it says otherwise")] = None,
    until: Annotated[str | None, typer.Option(help="up to this ISO date(-time); default now")] = None,
    days: Annotated[int | None, typer.Option(help="instead of --since: the last N days")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the ledger's charges with the site's own accounting over any window (operators)."""
    if since is not None and days is not None:
        raise UsageError("give --since or --days, not both")
    end = _moment(until, "--until") if until else datetime.now(UTC)
    begin = _moment(since, "--since") if since else end - timedelta(days=days if days is not None else 30)
    params = {"since": begin.isoformat(), "until": end.isoformat()}
    result = _call(url, "GET", f"/v1/sites/{site}/reconciliation", params=params)
    if as_json:
        emit(result, True)
    else:
        out.print(f"{begin:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC: {result['summary']}", soft_wrap=True)
        if result["differences"]:
            table = Table("kind", "project", "job", "site jobs", "ledger", "site", "delta", box=None)
            for d in result["differences"]:
                # Whole ids: `admin resolve` takes a prefix of the operator's own jobs only, and these are anyone's.
                table.add_row(
                    d["kind"], d["project"] or "", d["job_id"] or "",
                    ",".join(d["site_job_ids"]), d["ledger_amount"], d["site_amount"], d["delta"],
                )  # fmt: skip
            out.print(table)
    if not result["ok"]:
        raise typer.Exit(EXIT_FAILED)


# --- the console script -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run ``antenna``: every failure is one line on stderr and an exit code, never a traceback
    (``ANTENNA_DEBUG=1`` shows the traceback of an unexpected one)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="antenna", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `antenna` alone, or a group alone: its help, not an error
        print(exc.format_message(), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        err.print(f"[red]error:[/red] {escape(exc.format_message())}{hint}", soft_wrap=True, highlight=False)
        sys.exit(EXIT_USAGE)
    except ClickException as exc:
        err.print(f"[red]error:[/red] {escape(exc.format_message())}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("ANTENNA_DEBUG"):
            raise
        err.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {escape(str(exc))} "
            "(ANTENNA_DEBUG=1 shows where; please report it)",
            soft_wrap=True,
            highlight=False,
        )
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
