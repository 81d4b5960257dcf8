"""structlog set-up: readable lines on a terminal, JSON lines everywhere else (journald).

Every event carries a timestamp, level and logger name. Secrets never reach a log line:
settings hold them as ``SecretStr`` (rendered as ``**********``), and a last processor
masks any value under a key that looks like a secret and the credentials of any URL
written with them (``https://user:password@host``) in every other value.

Libraries log through the standard library (botocore, asyncpg, paho, aiohttp): ``configure``
also puts one handler on the root logger whose ``ProcessorFormatter`` runs those records
through the same chain (level, timestamp, exception, masking, renderer), so their lines look
like ours (the logger's name becomes ``component``) and carry no secret either. The root
logger passes warnings and worse, or the configured level if that is stricter: a library's
debug chatter (botocore's request dumps) stays out even at ``--log-level debug``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from gearshift.redact import redact_value

_SECRET_KEYS = ("password", "token", "secret", "authorization", "dsn")


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "**********"
        else:  # a URL with credentials in it, anywhere (problems, errors, tracebacks)
            event[key] = redact_value(event[key])
    return event


def _add_component(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A standard-library record's logger name, under the key our own loggers bind."""
    record = event.get("_record")
    if record is not None:
        event.setdefault("component", record.name)
    return event


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure`` installs (and replaces when called again)."""


def configure(*, level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=True) if console
                     else structlog.processors.JSONRenderer())
    chain: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_secrets,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *chain, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(stream=stream, level=max(numeric, logging.WARNING),
                  pre_chain=[structlog.contextvars.merge_contextvars, _add_component, *chain],
                  renderer=renderer)


def _route_stdlib(*, stream: Any, level: int, pre_chain: list[Any], renderer: Any) -> None:
    """Standard-library records through ``pre_chain`` and ``renderer``, to ``stream``."""
    handler = _StdlibHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
