"""Builds one connector per configured site; an unknown connector refuses to start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gateway.clock import Clock
from gateway.connectors.base import Connector
from gateway.errors import ConfigurationError
from gateway.secrets import SecretStore
from gateway.settings import Settings, SiteSettings, format_validation_error


@dataclass(frozen=True)
class ConnectorContext:
    """What a connector factory may use: its site's settings, the secrets store, a data folder, the clock."""

    name: str
    site: SiteSettings
    secrets: SecretStore
    data_dir: Path
    clock: Clock


Factory = Callable[[ConnectorContext], Connector]


def _local(ctx: ConnectorContext) -> Connector:
    from gateway.connectors.local import LocalConnector

    speed = float(ctx.site.options.get("seconds_per_minute", 60.0))
    return LocalConnector(
        ctx.name,
        workdir=ctx.data_dir / "local" / ctx.name,
        partitions=ctx.site.partitions,
        clock=ctx.clock,
        seconds_per_minute=speed,
    )


def _slurmrestd(ctx: ConnectorContext) -> Connector:
    from gateway.connectors.slurmrestd import SlurmrestdConnector, SlurmrestdOptions

    return SlurmrestdConnector(ctx.name, _options(SlurmrestdOptions, ctx), secrets=ctx.secrets, clock=ctx.clock)


def _ssh(ctx: ConnectorContext) -> Connector:
    from gateway.connectors.ssh import SshConnector, SshOptions

    return SshConnector(ctx.name, _options(SshOptions, ctx), secrets=ctx.secrets, clock=ctx.clock)


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def _options(model: type[OptionsT], ctx: ConnectorContext) -> OptionsT:
    return _parsed_options(model, ctx.name, ctx.site)


def _parsed_options(model: type[OptionsT], name: str, site: SiteSettings) -> OptionsT:
    """A site's ``options`` as its connector reads them; ConfigurationError names every offending key."""
    try:
        return model(**site.options)
    except ValidationError as exc:
        raise ConfigurationError(
            "\n".join(f"sites.{name}.options.{line}" for line in format_validation_error(exc).splitlines())
        ) from exc


def default_factories() -> dict[str, Factory]:
    """Connector name → factory. Adapters import lazily so a missing optional library fails only its site."""
    return {"local": _local, "slurmrestd": _slurmrestd, "ssh": _ssh}


def _option_models() -> dict[str, type[BaseModel]]:
    from gateway.connectors.slurmrestd import SlurmrestdOptions
    from gateway.connectors.ssh import SshOptions

    return {"slurmrestd": SlurmrestdOptions, "ssh": SshOptions}


def check_sites(settings: Settings) -> None:
    """Refuse, naming the key, what ``build_connectors`` would refuse at start-up, without building anything:
    a connector this release does not have (firecrest and unicore are planned) and invalid options."""
    available = default_factories()
    models = _option_models()
    problems: list[str] = []
    for name, site in settings.sites.items():
        if site.connector not in available:
            problems.append(
                f"sites.{name}.connector: {site.connector!r} is not available in this release "
                f"(available: {', '.join(sorted(available))})"
            )
            continue
        model = models.get(site.connector)
        if model is None:
            continue
        try:
            _parsed_options(model, name, site)
        except ConfigurationError as exc:
            problems.extend(exc.detail.splitlines())
    if problems:
        raise ConfigurationError("\n".join(problems))


def build_connectors(
    settings: Settings,
    *,
    secrets: SecretStore,
    data_dir: Path,
    clock: Clock,
    factories: dict[str, Factory] | None = None,
) -> dict[str, Connector]:
    table = factories if factories is not None else default_factories()
    connectors: dict[str, Connector] = {}
    for name, site in settings.sites.items():
        factory = table.get(site.connector)
        if factory is None:
            raise ConfigurationError(
                f"sites.{name}.connector: no connector {site.connector!r} (available: {', '.join(sorted(table))})"
            )
        connectors[name] = factory(ConnectorContext(name, site, secrets, data_dir, clock))
    return connectors
