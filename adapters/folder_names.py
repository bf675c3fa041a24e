"""Names in a drop folder: which ones are taken, which are someone's temporary files, and the gateway's own.

A drop folder is shared with another system, so its names are that system's choice and cannot be trusted
for anything but tracing. The gateway never reuses them in ``done/`` and ``failed/``: files there get a
gateway-made stem, ``<UTC time taken>-<random>``, plus the original suffix when it is a plain one. The
original name is written into the reason file (or the ``.id`` file) beside them, made printable and cut
short, and that is also the only form in which a name reaches a log line.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import PurePath

__all__ = [
    "MAX_NAME_BYTES",
    "SUBFOLDERS",
    "claim_name",
    "is_temporary",
    "meta_name",
    "name_problem",
    "new_stem",
    "printable",
    "safe_suffix",
    "split_claim_name",
]

#: The gateway's own subfolders of a drop folder.
SUBFOLDERS = ("processing", "done", "failed")

#: Longer names are not taken: the claim name in ``processing/`` (stem + ``~`` + name) must fit NAME_MAX (255).
MAX_NAME_BYTES = 200

# the convention for a file still being written: a dotfile, or one of these endings (WinSCP uses .filepart)
_TEMPORARY_SUFFIXES = (".tmp", ".part", ".filepart")
# suffixes the gateway gives its own files beside a taken one; a body never keeps one of these
_OWN_SUFFIXES = frozenset({".id", ".json"})
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_CLAIM_NAME = re.compile(r"(\d{8}T\d{6}Z-[0-9a-f]{12})~(.+)", re.S)


def new_stem(now: float) -> str:
    """A fresh gateway-made stem: the UTC time (so ``ls`` sorts by when files were taken) and 48 random bits."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{secrets.token_hex(6)}"


def claim_name(stem: str, original: str) -> str:
    """The name a claimed file has in ``processing/``: the stem, then the original name to put it back under."""
    return f"{stem}~{original}"


def split_claim_name(name: str) -> tuple[str | None, str]:
    """(stem, original name) of a name in ``processing/``; a name without a stem (an older gateway's) is its own."""
    match = _CLAIM_NAME.fullmatch(name)
    return (match[1], match[2]) if match else (None, name)


def meta_name(body: str) -> str:
    """The metadata file that goes with a body: ``<id>.msg`` -> ``<id>.json``."""
    return str(PurePath(body).with_suffix(".json"))


def is_temporary(name: str) -> bool:
    """A file still being written, by the convention: a dotfile or a ``*.tmp`` / ``*.part`` name."""
    return name.startswith(".") or name.lower().endswith(_TEMPORARY_SUFFIXES)


def name_problem(name: str) -> str | None:
    """Why a name is not taken (not UTF-8, too long), or None when it is fine."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # os.listdir hands undecodable bytes over as surrogates
        return "the name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    return None


def safe_suffix(name: str) -> str:
    """The original suffix when it is a plain one (``.xml``, ``.msg``), else none."""
    suffix = PurePath(name).suffix
    if _PLAIN_SUFFIX.fullmatch(suffix) and suffix.lower() not in _OWN_SUFFIXES:
        return suffix
    return ""


def printable(name: str, limit: int = 120) -> str:
    """A name as it may be written to a log line or a reason file: printable characters only, cut short."""
    text = "".join(c if c.isprintable() else "?" for c in name)
    return text if len(text) <= limit else f"{text[:limit]}…"
