"""Names in a drop folder: which ones are taken, which are someone's temporary files, and the gateway's own.

A drop folder is shared with another system, so its names are that system's choice and cannot be trusted
for anything but tracing. The gateway never reuses them in ``done/`` and ``failed/``: files there get a
gateway-made stem, ``<UTC time taken>-<random>``, plus the original suffix when it is a plain one. The
original name is written into the reason file (or the ``.id`` file) beside them, made printable and cut
short, and that is also the only form in which a name reaches a log line.

In ``processing/`` a claimed file is ``<stem>.w<owner>~<original name>``, where ``<owner>`` is the claiming
watcher's id, and each running watcher has its lock file ``watcher-<owner>.lock`` there
(:mod:`adapters.folder_owner`).
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
    "lock_name",
    "lock_owner",
    "meta_name",
    "name_problem",
    "new_owner",
    "new_stem",
    "printable",
    "safe_suffix",
    "split_claim_name",
]

#: The gateway's own subfolders of a drop folder.
SUBFOLDERS = ("processing", "done", "failed")

#: Longer names are not taken: the claim name in ``processing/`` (stem, ``.w`` + owner id and ``~``: 48
#: bytes, + the name) must fit NAME_MAX (255).
MAX_NAME_BYTES = 200

# the convention for a file still being written: a dotfile, or one of these endings (WinSCP uses .filepart)
_TEMPORARY_SUFFIXES = (".tmp", ".part", ".filepart")
# suffixes the gateway gives its own files beside a taken one; a body never keeps one of these
_OWN_SUFFIXES = frozenset({".id", ".json"})
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
# an owner id is optional: claims made before owners were named have none
_CLAIM_NAME = re.compile(r"(\d{8}T\d{6}Z-[0-9a-f]{12})(?:\.w([0-9a-f]{16}))?~(.+)", re.S)
_LOCK_NAME = re.compile(r"watcher-([0-9a-f]{16})\.lock")


def new_stem(now: float) -> str:
    """A fresh gateway-made stem: the UTC time (so ``ls`` sorts by when files were taken) and 48 random bits."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{secrets.token_hex(6)}"


def new_owner() -> str:
    """A fresh watcher (owner) id: 64 random bits."""
    return secrets.token_hex(8)


def claim_name(stem: str, original: str, owner: str) -> str:
    """The name a claimed file has in ``processing/``: the stem, the claiming watcher, then the original name
    to put it back under."""
    return f"{stem}.w{owner}~{original}"


def split_claim_name(name: str) -> tuple[str | None, str | None, str]:
    """(stem, owner, original name) of a name in ``processing/``. An older gateway's claim has no owner, and
    one older still no stem either: then the name is its own original."""
    match = _CLAIM_NAME.fullmatch(name)
    return (match[1], match[2], match[3]) if match else (None, None, name)


def lock_name(owner: str) -> str:
    """The lock file in ``processing/`` that a running watcher holds."""
    return f"watcher-{owner}.lock"


def lock_owner(name: str) -> str | None:
    """The owner id when ``name`` is a watcher's lock file, else None."""
    match = _LOCK_NAME.fullmatch(name)
    return match[1] if match else None


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
