"""structlog set-up: readable lines on a terminal, JSON lines everywhere else (journald).

Every event carries a timestamp, level and logger name. Secrets never reach a log line:
settings hold them as ``SecretStr`` (rendered as ``**********``), and a last processor
masks any value under a key that looks like a secret and the credentials of any URL
written with them (``https://user:password@host``) in every other value.
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


def configure(*, level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=True) if console
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
