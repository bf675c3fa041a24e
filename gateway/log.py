"""structlog set-up: JSON lines on stdout (console rendering on a TTY), and a last line of defence that keeps
national identity numbers out of every log line.

Log lines carry codes, ids and HER-ids - never payloads, names or national ids. The pipeline only ever
binds those; :func:`redact` still scrubs any 11-digit number (a fødselsnummer, D- or H-number) and drops
keys that must never be logged, in case a future change forgets.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["FORBIDDEN_KEYS", "configure", "get_logger", "redact"]

#: Keys whose values are never written, whatever they hold.
FORBIDDEN_KEYS = frozenset({"payload", "body", "document", "xml", "patient", "name", "fnr", "national_id"})

# 11 digits standing alone: a fødselsnummer, D-number, H-number or a synthetic one.
_NATIONAL_ID = re.compile(r"(?<![0-9A-Za-z])\d{6}\s?\d{5}(?![0-9A-Za-z])")
_REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _NATIONAL_ID.sub(_REDACTED, value)
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, dict):
        return {k: (_REDACTED if k in FORBIDDEN_KEYS else _scrub(v)) for k, v in value.items()}
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop forbidden keys, scrub national ids from every value."""
    for key in list(event_dict):
        if key in FORBIDDEN_KEYS:
            event_dict[key] = _REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure(*, fmt: Literal["auto", "json", "console"] = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog once per process (``serve``, ``replay`` and the CLI call this)."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A bound structlog logger for one module."""
    return structlog.get_logger(name)
