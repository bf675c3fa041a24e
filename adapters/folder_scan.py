"""Looking at a drop folder: which files are complete and may be taken, and which entries are not taken and why.

Only ``lstat`` is used here - nothing is opened, so a FIFO or a link costs nothing. A regular file is
complete when it has stood still: the same inode, size, mtime and ctime in scans at least ``settle_s``
apart (by the injected clock, so it does not matter how the writer's clock or the file's mtime run).
Files named by the writing convention as temporary (a dotfile, ``*.tmp``, ``*.part``) are waited for;
once one has stood still for ``stale_s`` its writer is taken to have given up on it.

Every entry that is not taken is reported once - one warning with ``code=folder.entry_ignored`` - not
on every scan: what was reported is remembered by (name, inode, reason) while the entry is there.
Regular files among them are handed back to the watcher to be moved aside into ``failed/``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from adapters.folder_names import SUBFOLDERS, is_temporary, meta_name, name_problem, printable
from gateway.clock import Clock
from gateway.log import get_logger

__all__ = ["Aside", "Candidate", "Survey", "report_ignored"]

log = get_logger(__name__)

#: (inode, size, mtime_ns, ctime_ns): a file that keeps these has not been written to.
Signature = tuple[int, int, int, int]

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


@dataclass(frozen=True)
class Candidate:
    """A complete body (and its metadata file, if there is one) to take; ``sig``: as seen when judged."""

    body: str
    sig: Signature
    meta: str | None = None


@dataclass(frozen=True)
class Aside:
    """A regular file that is not taken and is to be moved to ``failed/`` with the reason."""

    name: str
    inode: int
    reason: str


def signature(info: os.stat_result) -> Signature:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def kind_of(mode: int) -> str | None:
    """What a non-regular entry is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def report_ignored(folder: Path, name: str, reason: str, moved_to: str | None = None) -> None:
    """The one warning for an entry that is not taken."""
    log.warning(
        "folder.entry_ignored",
        code="folder.entry_ignored",
        folder=str(folder),
        file=printable(name),
        reason=reason,
        moved_to=moved_to,
    )


class Survey:
    """What a watcher remembers between scans: since when each file has stood still, and what it reported."""

    def __init__(self, folder: Path, clock: Clock, *, settle_s: float, stale_s: float) -> None:
        self.folder = folder
        self.clock = clock
        self.settle_s = settle_s
        self.stale_s = stale_s
        self._still: dict[str, tuple[Signature, float]] = {}
        self._reported: set[tuple[str, int, str]] = set()

    def first_report(self, name: str, inode: int, reason: str) -> bool:
        """True the first time this entry is reported for this reason (and remembers it)."""
        key = (name, inode, reason)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def look(self, dir_fd: int) -> tuple[list[Candidate], list[Aside]]:
        """The files to take now, in name order, and the regular files to move aside."""
        now = self.clock.now()
        entries: dict[str, os.stat_result] = {}
        for name in os.listdir(dir_fd):
            if name in SUBFOLDERS:
                continue
            try:
                entries[name] = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
        self._forget(entries)
        regular: dict[str, float] = {}  # name -> how long it has stood still
        asides: list[Aside] = []
        for name, info in sorted(entries.items()):
            kind = kind_of(info.st_mode)
            if kind is not None:
                if self.first_report(name, info.st_ino, kind):
                    report_ignored(self.folder, name, f"{kind}; only regular files are taken")
                continue
            still = self._still_for(name, info, now)
            problem = name_problem(name)
            if problem is not None:
                if still >= self.settle_s:
                    asides.append(Aside(name, info.st_ino, problem))
            elif is_temporary(name):
                if still >= self.stale_s:
                    asides.append(Aside(name, info.st_ino, f"a temporary file left unchanged for {self.stale_s:g} s"))
            else:
                regular[name] = still
        return self._candidates(entries, regular, asides), asides

    def _candidates(
        self, entries: dict[str, os.stat_result], regular: dict[str, float], asides: list[Aside]
    ) -> list[Candidate]:
        bodies = {meta_name(name) for name in regular if not name.endswith(".json")}
        found: list[Candidate] = []
        for name, still in regular.items():
            if name.endswith(".json"):  # metadata, taken with its body; alone for long, it was left behind
                if name not in bodies and still >= self.stale_s:
                    reason = f"a metadata file without its body for {self.stale_s:g} s"
                    asides.append(Aside(name, entries[name].st_ino, reason))
                continue
            meta: str | None = meta_name(name)
            if meta not in regular:
                meta = None
            if self._settled(still) and (meta is None or self._settled(regular[meta])):
                found.append(Candidate(name, signature(entries[name]), meta))
        return found

    def _settled(self, still: float) -> bool:
        return self.settle_s <= 0 or still >= self.settle_s

    def _still_for(self, name: str, info: os.stat_result, now: float) -> float:
        sig = signature(info)
        seen = self._still.get(name)
        if seen is None or seen[0] != sig:
            self._still[name] = (sig, now)
            return 0.0
        return now - seen[1]

    def _forget(self, entries: dict[str, os.stat_result]) -> None:
        """Drop what is remembered of entries that are gone, so memory follows the folder."""
        present = {(name, info.st_ino) for name, info in entries.items()}
        self._still = {name: seen for name, seen in self._still.items() if (name, seen[0][0]) in present}
        self._reported = {key for key in self._reported if (key[0], key[1]) in present}
