"""Structured logs: JSON, one event per line, with the request id and the fields each event adds.

Tokens, secrets and script bodies are never passed to a log call; as a second line of defence any field
whose name looks secret is dropped before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from gateway.settings import LoggingSettings

_SECRET_FIELD = re.compile(r"(token|secret|password|authorization|script|jwt_key|private)", re.I)


def _drop_secret_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in [k for k in event if _SECRET_FIELD.search(k)]:
        event[key] = "[redacted]"
    return event


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Route the standard library's logging (ours, uvicorn's) through one JSON formatter."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_secret_fields,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if settings.json_format else structlog.dev.ConsoleRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request once
