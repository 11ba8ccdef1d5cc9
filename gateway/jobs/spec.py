"""The job spec a person submits, and its validation against the site's partition.

Nothing in the spec chooses the Slurm account, user, QoS or reservation: the gateway sets those. The script's
``#SBATCH`` lines may fill the spec's fields, and nothing else that is priced (gateway/jobs/directives.py).
Every refusal is an ``InvalidJob`` naming the field, raised before anything is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.billing import BillingFormula, Resources, price
from gateway.errors import InvalidJob, PayloadTooLarge
from gateway.jobs.directives import merge_directives, read_directives
from gateway.settings import LimitsSettings, PartitionSettings, Settings

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<h>\d{1,3}):(?P<m>\d{2}):(?P<s>\d{2})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_WORKDIR_PART = re.compile(r"^[A-Za-z0-9._-]+$")

Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", max_length=63)]


class JobSpec(BaseModel):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    project: Slug
    site: Slug
    partition: Slug
    script: str = Field(description="the batch script, starting with #!", min_length=1)
    name: str = Field(default="job", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    nodes: int = Field(default=1, ge=1, le=10_000)
    cores: int | None = Field(default=None, ge=1, le=10_000_000, description="total cores (default: 1 per node)")
    memory_gb: int | None = Field(default=None, ge=1, le=100_000_000, description="total memory in GB")
    gpus: int = Field(default=0, ge=0, le=100_000, description="total GPUs (GCDs on LUMI)")
    time_limit: str | int | None = Field(
        default=None, description="HH:MM:SS, D-HH:MM:SS, or whole minutes; or an #SBATCH --time line in the script"
    )
    environment: dict[str, str] = Field(default_factory=dict, max_length=64)
    working_directory: str | None = Field(default=None, max_length=1024)

    @field_validator("time_limit")
    @classmethod
    def _time_limit_parses(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            minutes_of(value)
        return value

    @field_validator("environment")
    @classmethod
    def _environment_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid variable name")
            if len(val) > 4096 or "\x00" in val:
                raise ValueError(f"the value of {name} is too long or contains NUL")
        return value


def minutes_of(value: str | int) -> int:
    """Slurm-style time limit to whole minutes (seconds round up)."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError("the time limit must be at least one minute")
        return value
    text = value.strip()
    if text.isdigit():
        return minutes_of(int(text))
    match = _TIME.match(text)
    if match is None:
        raise ValueError("use HH:MM:SS, D-HH:MM:SS or whole minutes")
    days, h, m, s = (int(match.group(g) or 0) for g in ("d", "h", "m", "s"))
    if m >= 60 or s >= 60:
        raise ValueError("minutes and seconds must be below 60")
    total = math.ceil((((days * 24 + h) * 60 + m) * 60 + s) / 60)
    if total < 1:
        raise ValueError("the time limit must be at least one minute")
    return total


@dataclass(frozen=True)
class PricedJob:
    """A validated spec, the resources it holds, and its price at the time limit."""

    spec: JobSpec
    partition: PartitionSettings
    resources: Resources
    time_limit_minutes: int
    unit: str
    price: Decimal


def held_resources(partition: PartitionSettings, *, nodes: int, cores: int, memory_gb: Decimal, gpus: int) -> Resources:
    """What the site allocates (and bills): whole nodes on exclusive partitions, the request otherwise."""
    if partition.exclusive:
        return Resources(
            nodes=nodes,
            cores=nodes * partition.cores_per_node,
            memory_gb=Decimal(nodes * partition.memory_gb_per_node),
            gpus=nodes * partition.gpus_per_node,
        )
    return Resources(nodes=nodes, cores=cores, memory_gb=memory_gb, gpus=gpus)


def price_of(formula: BillingFormula, resources: Resources, seconds: int) -> Decimal:
    return price(formula, resources, seconds)


def with_directives(spec: JobSpec) -> JobSpec:
    """The spec with what the script's ``#SBATCH`` lines ask for filled in (gateway/jobs/directives.py)."""
    given = {field: getattr(spec, field) for field in spec.model_fields_set}
    merged = merge_directives(given, read_directives(spec.script), partition=spec.partition)
    filled = {field: value for field, value in merged.items() if field not in given}
    effective = spec if not filled else _filled(spec, filled)  # most scripts fill nothing
    if effective.time_limit is None:
        raise InvalidJob("give a time limit, in the request or as an #SBATCH --time line", field="time_limit")
    return effective


def _filled(spec: JobSpec, filled: dict[str, Any]) -> JobSpec:
    """``spec`` with the directives' fields, held to the same bounds as a request's."""
    if "time_limit" in filled:  # named by its directive: a clearer message than the field's own
        try:
            minutes_of(filled["time_limit"])
        except ValueError as exc:
            raise InvalidJob(f"#SBATCH --time={filled['time_limit']} (time_limit): {exc}", field="time_limit") from exc
    try:
        return JobSpec.model_validate({**spec.model_dump(exclude_unset=True), **filled})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "script"
        raise InvalidJob(f"the script's #SBATCH lines give {field}: {error['msg']}", field=field) from exc


def validate_and_price(spec: JobSpec, settings: Settings) -> PricedJob:
    """Check the spec, with its script's directives, against the site's partition and the gateway's limits;
    price it at its time limit. ``PricedJob.spec`` is the spec as it will run."""
    limits = settings.limits
    _check_script(spec.script, limits)
    spec = with_directives(spec)
    assert spec.time_limit is not None  # with_directives refuses a spec without one
    site = settings.site(spec.site)
    if site is None:
        raise InvalidJob(f"unknown site {spec.site!r} (known: {', '.join(sorted(settings.sites))})", field="site")
    partition = site.partitions.get(spec.partition)
    if partition is None:
        raise InvalidJob(
            f"site {spec.site} has no partition {spec.partition!r} (known: {', '.join(sorted(site.partitions))})",
            field="partition",
        )
    minutes = minutes_of(spec.time_limit)
    if minutes > partition.max_time_minutes:
        raise InvalidJob(
            f"time limit {minutes} min exceeds the partition's maximum of {partition.max_time_minutes} min",
            field="time_limit",
        )
    if spec.nodes > partition.max_nodes:
        raise InvalidJob(f"at most {partition.max_nodes} nodes on {spec.partition}", field="nodes")
    cores = spec.cores if spec.cores is not None else spec.nodes
    if cores > spec.nodes * partition.cores_per_node:
        raise InvalidJob(
            f"{spec.nodes} node(s) of {spec.partition} have {partition.cores_per_node} cores each", field="cores"
        )
    if cores < spec.nodes:
        raise InvalidJob("at least one core per node", field="cores")
    if spec.gpus and partition.gpus_per_node == 0:
        raise InvalidJob(f"partition {spec.partition} has no GPUs", field="gpus")
    if spec.gpus > spec.nodes * partition.gpus_per_node:
        raise InvalidJob(
            f"{spec.nodes} node(s) of {spec.partition} have {partition.gpus_per_node} GPUs each", field="gpus"
        )
    memory = spec.memory_gb
    if memory is None:
        memory = math.ceil(cores * partition.memory_gb_per_node / partition.cores_per_node)
    if memory > spec.nodes * partition.memory_gb_per_node:
        raise InvalidJob(
            f"{spec.nodes} node(s) of {spec.partition} have {partition.memory_gb_per_node} GB each", field="memory_gb"
        )
    _check_environment(spec.environment, limits)
    _check_working_directory(spec.working_directory)
    resources = held_resources(partition, nodes=spec.nodes, cores=cores, memory_gb=Decimal(memory), gpus=spec.gpus)
    amount = price_of(partition.billing, resources, minutes * 60)
    return PricedJob(spec, partition, resources, minutes, partition.billing.unit, amount)


def _check_script(script: str, limits: LimitsSettings) -> None:
    size = len(script.encode("utf-8"))
    if size > limits.script_max_bytes:
        raise PayloadTooLarge(
            f"the script is {size} bytes; the limit is {limits.script_max_bytes}",
            field="script",
            limit=limits.script_max_bytes,
        )
    if not script.startswith("#!"):
        raise InvalidJob("a batch script must start with an interpreter line (#!)", field="script")
    if "\x00" in script:
        raise InvalidJob("the script contains a NUL byte", field="script")


def _check_environment(environment: dict[str, str], limits: LimitsSettings) -> None:
    allowed = limits.environment_allowlist
    for name in environment:
        if not any(name == pat or (pat.endswith("*") and name.startswith(pat[:-1])) for pat in allowed):
            raise InvalidJob(
                f"environment variable {name} is not allowed (allowed: {', '.join(allowed)})",
                field=f"environment.{name}",
            )


def _check_working_directory(path: str | None) -> None:
    if path is None:
        return
    pure = PurePosixPath(path)
    if (
        pure.is_absolute()
        or not path
        or any(part in ("..", ".") or not _WORKDIR_PART.match(part) for part in pure.parts)
    ):
        raise InvalidJob(
            "the working directory must be relative to the project space, without '..' or special characters",
            field="working_directory",
        )
