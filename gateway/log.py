"""structlog set-up: JSON lines on stdout (console rendering on a TTY), and a last line of defence that keeps
national identity numbers out of every log line.

Log lines carry codes, ids and HER-ids - never payloads, names or national ids. The pipeline only ever
binds those; :func:`redact` still scrubs any 11-digit number (a fødselsnummer, D- or H-number) and drops
keys that must never be logged, in case a future change forgets. :func:`bound` then cuts every string and
list to a fixed length, so a value a client sent (a HER-id, a path) cannot make a line of any size.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["FORBIDDEN_KEYS", "MAX_ITEMS", "MAX_STRING", "bound", "configure", "get_logger", "redact"]

#: Keys whose values are never written, whatever they hold.
FORBIDDEN_KEYS = frozenset({"payload", "body", "document", "xml", "patient", "name", "fnr", "national_id"})

# 11 digits standing alone: a fødselsnummer, D-number, H-number or a synthetic one.
_NATIONAL_ID = re.compile(r"(?<![0-9A-Za-z])\d{6}\s?\d{5}(?![0-9A-Za-z])")
_REDACTED = "[redacted]"

#: The longest string value a log line carries, and the most items of a list; longer ones are cut with a
#: marker saying how much was dropped. A traceback (``exception``) may be longer: its head and its tail.
MAX_STRING = 256
MAX_ITEMS = 32
_MAX_TRACEBACK = 8192


def _scrub(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, dict):
        return {k: (_REDACTED if k in FORBIDDEN_KEYS else _scrub(v)) for k, v in value.items()}
    # bytes, exceptions, paths: scrubbed as they will render (the renderer would str() them afterwards)
    return _NATIONAL_ID.sub(_REDACTED, value if isinstance(value, str) else str(value))


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop forbidden keys, scrub national ids from every value."""
    for key in list(event_dict):
        if key in FORBIDDEN_KEYS:
            event_dict[key] = _REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _cut(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        kept = [_cut(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            kept.append(f"…[+{len(value) - MAX_ITEMS} items]")
        return kept
    if isinstance(value, dict):
        items = list(value.items())
        cut = {_cut(k): _cut(v) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            cut["…"] = f"[+{len(items) - MAX_ITEMS} items]"
        return cut
    text = value if isinstance(value, str) else str(value)  # bytes, exceptions, paths: as they would render
    if len(text) <= MAX_STRING:
        return value
    return f"{text[:MAX_STRING]}…[+{len(text) - MAX_STRING} chars]"


def bound(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: cut every string to :data:`MAX_STRING` characters and every list to
    :data:`MAX_ITEMS` items (a traceback keeps its first and last 4 KiB). Runs after :func:`redact`, so a
    national id is scrubbed whole before it could be cut in half."""
    for key in list(event_dict):
        value = event_dict[key]
        if key != "exception" or not isinstance(value, str):
            event_dict[key] = _cut(value)
        elif len(value) > _MAX_TRACEBACK:
            half = _MAX_TRACEBACK // 2
            event_dict[key] = f"{value[:half]}\n…[{len(value) - _MAX_TRACEBACK} chars]…\n{value[-half:]}"
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
            bound,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A bound structlog logger for one module."""
    return structlog.get_logger(name)
