"""The drop-folder watcher: takes each complete file exactly once, hands it over, and files it in done/ or failed/.

Each scan opens the folder and its ``processing/``, ``done/`` and ``failed/`` as directory fds (a link or
non-folder in their place stops the watcher, with one error line, until it is put right), looks at the
entries (:mod:`adapters.folder_scan`), and takes the complete ones: a file is renamed into
``processing/`` under ``<stem>.w<owner>~<name>`` - the claim: whoever renames first has it, so two
scanners never both take it - then read (from ``fstat`` on: a regular file with no other hard link, no
larger than ``max_bytes``), handed to the handler, and renamed to ``done/<stem><suffix>`` or
``failed/<stem><suffix>`` beside ``<stem>.id`` (the gateway's id) or ``<stem>.reason.txt`` (KITH code,
event, condition, message). Both of those name the original file. A temporary problem puts it back under
its own name for the next scan.

A running watcher holds a lock in ``processing/`` (:mod:`adapters.folder_owner`); what a watcher that is
gone - stopped, or its process killed - left there is put back at start and at every scan, and what a
watcher still at work on is never touched, so several gateway processes can watch one folder. A
``scan()`` of a watcher that was not started holds the lock for that scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.folder_fs import DropDirs, read_regular, rename_if_free, replace_own, reserve
from adapters.folder_names import claim_name, new_stem, printable, safe_suffix
from adapters.folder_owner import OwnLock, put_back, recover
from adapters.folder_scan import Aside, Candidate, Survey, report_ignored
from gateway.clock import Clock, SystemClock
from gateway.errors import MessageTooLarge
from gateway.log import get_logger
from gateway.transport import InboundHandler, InboundResult, Packet
from gateway.xml import DEFAULT_MAX_BYTES

__all__ = ["META_MAX_BYTES", "STALE_S", "FolderWatcher"]

log = get_logger(__name__)

#: How long a temporary file (or metadata without its body) may stand still before it counts as left behind.
STALE_S = 3600.0
#: A packet's metadata file is refused unread above this size.
META_MAX_BYTES = 64 * 1024
_NOT_TAKEN = "not taken: "


@dataclass(frozen=True)
class _Claimed:
    stem: str
    owner: str
    body: str  # original names
    meta: str | None

    def name(self, original: str) -> str:
        """The name in processing/ of one of the claimed files."""
        return claim_name(self.stem, original, self.owner)

    @property
    def files(self) -> list[tuple[str, str]]:
        """(name in processing/, original name), metadata first: it goes back before its body."""
        pairs = [(self.name(self.meta), self.meta)] if self.meta else []
        return [*pairs, (self.name(self.body), self.body)]


class FolderWatcher:
    """Takes every complete file dropped into ``folder`` exactly once and hands it to ``handler``."""

    def __init__(
        self,
        folder: Path,
        handler: InboundHandler,
        *,
        poll_interval_s: float = 1.0,
        settle_s: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock | None = None,
        stale_s: float = STALE_S,
    ) -> None:
        self.folder = folder
        self.handler = handler
        self.poll_interval_s = poll_interval_s
        self.max_bytes = max_bytes
        self.clock = clock or SystemClock()
        self._survey = Survey(folder, self.clock, settle_s=settle_s, stale_s=stale_s)
        self._task: asyncio.Task[None] | None = None
        self._refused: str | None = None  # why the folder is unusable, while it is
        self._older_pending = False  # claims without an owner go back at start (or the first usable scan)
        self._lock: OwnLock | None = None
        self._running = False
        self._scans = 0  # scans under way: a watcher that is not running holds its lock while there are any
        self._odd: set[tuple[str, int]] = set()  # entries in processing/ reported as not regular files

    async def start(self) -> None:
        # what watchers that are gone left half-handled goes back first
        self._running = True
        self._older_pending = True
        dirs = self._open()
        if dirs is not None:
            with dirs:
                self._recover(dirs, self._hold(dirs))
        self._task = asyncio.create_task(self._run(), name=f"folder-watch:{self.folder}")

    async def stop(self) -> None:
        """Stop scanning and let go of the lock (a file the cancelled scan was at stays for others to put back)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._running = False
        if self._scans == 0:
            self._let_go(None)

    async def _run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad scan must not stop the watcher; the next one tries again
                log.exception("folder.scan_failed", code="folder.scan_failed", folder=str(self.folder))
            await asyncio.sleep(self.poll_interval_s)

    async def scan(self) -> int:
        """Handle every complete file now in the folder; returns how many were taken."""
        dirs = self._open()
        if dirs is None:
            return 0
        with dirs:
            self._scans += 1
            try:
                owner = self._hold(dirs)
                self._recover(dirs, owner)
                candidates, asides = self._survey.look(dirs.root)
                for aside in asides:
                    self._move_aside(dirs, aside)
                taken = 0
                for candidate in candidates:
                    taken += await self._take(dirs, candidate, owner)
            finally:
                self._scans -= 1
                if not self._running and self._scans == 0:
                    self._let_go(dirs)
        return taken

    def _open(self) -> DropDirs | None:
        """The folder's directory fds, or None (said once, until it changes) when a part is unusable."""
        try:
            dirs = DropDirs(self.folder)
        except OSError as exc:
            refused = f"{exc.filename}: {exc.strerror or exc}"
            if refused != self._refused:
                log.error(
                    "folder.unusable",
                    code="folder.unusable",
                    folder=str(exc.filename or self.folder),
                    reason=f"{exc.strerror or exc}; nothing is taken from {self.folder} until it is put right",
                )
                self._refused = refused
            return None
        if self._refused is not None:
            log.info("folder.usable", folder=str(self.folder))
            self._refused = None
        return dirs

    # -- the lock and what others left -----------------------------------------------------------------

    def _hold(self, dirs: DropDirs) -> str:
        """This watcher's owner id, its lock held in this folder's processing/ (taken afresh when the lock
        file there is not the one held: processing/ replaced, or the file removed by hand)."""
        if self._lock is not None and not self._lock.held(dirs.processing):
            self._let_go(None)
        if self._lock is None:
            self._lock = OwnLock.take(dirs.processing)
        return self._lock.owner

    def _let_go(self, dirs: DropDirs | None) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        if dirs is not None:
            lock.release(dirs.processing)
            return
        try:
            with DropDirs(self.folder) as fresh:
                lock.release(fresh.processing)
        except OSError:  # the folder is unusable now: just let go; the lock file is removed by the next watcher
            lock.release(None)

    def _recover(self, dirs: DropDirs, owner: str) -> None:
        """Put back what watchers that are gone left in processing/ (and, once, claims without an owner)."""
        older, self._older_pending = self._older_pending, False
        present = set(os.listdir(dirs.processing))
        self._odd = {key for key in self._odd if key[0] in present}
        back = recover(dirs, owner, older=older, fresh_stem=lambda: new_stem(self.clock.now()), odd=self._report_odd)
        if back:
            log.info("folder.recovered", folder=str(self.folder), files=back)

    def _report_odd(self, name: str, inode: int, kind: str) -> None:
        if (name, inode) not in self._odd:
            self._odd.add((name, inode))
            report_ignored(self.folder / "processing", name, f"{kind}; only regular files are taken")

    # -- taking one file ------------------------------------------------------------------------------

    async def _take(self, dirs: DropDirs, candidate: Candidate, owner: str) -> int:
        claimed = _Claimed(new_stem(self.clock.now()), owner, candidate.body, None)
        try:  # the claim: a fresh random name in processing/, so nothing there is overwritten
            rename_if_free(dirs.root, candidate.body, dirs.processing, claimed.name(candidate.body))
        except FileNotFoundError:
            return 0  # another scanner has it
        if candidate.meta is not None:
            try:
                rename_if_free(dirs.root, candidate.meta, dirs.processing, claimed.name(candidate.meta))
                claimed = replace(claimed, meta=candidate.meta)
            except FileNotFoundError:
                pass
        result = await self._handle(dirs, candidate, claimed)
        if result is None or result.retry_later:
            put_back(dirs, claimed.stem, claimed.files)
            return 0
        placed = self._file_away(dirs, claimed, result)
        if result.event == "folder.entry_ignored":
            why = result.message.removeprefix(_NOT_TAKEN)
            report_ignored(self.folder, claimed.body, why, moved_to=f"failed/{placed}")
        return 1

    async def _handle(self, dirs: DropDirs, candidate: Candidate, claimed: _Claimed) -> InboundResult | None:
        """The handler's verdict, the watcher's own refusal, or None when the file changed after it settled."""
        try:
            data, after = read_regular(dirs.processing, claimed.name(claimed.body), self.max_bytes, alone=True)
        except MessageTooLarge as exc:
            return self._refuse(claimed, InboundResult.refused(exc))
        except OSError as exc:
            if exc.errno == errno.EMLINK:
                return _not_alone("it has other hard links")
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            return self._refuse(claimed, InboundResult(False, event="folder.unreadable", message=f"not read: {why}"))
        if (after.st_ino, after.st_size, after.st_mtime_ns) != candidate.sig[:3]:
            return None  # written to after it settled: back it goes, to settle again
        try:
            packet = self._packet(claimed.body, data, self._metadata(dirs, claimed))
        except OSError as exc:
            if exc.errno == errno.EMLINK:
                return _not_alone("its metadata file has other hard links")
            return self._bad_metadata(claimed, exc)
        except (MessageTooLarge, ValueError, TypeError, AttributeError, RecursionError) as exc:  # JSON, UTF-8, fields
            return self._bad_metadata(claimed, exc)
        try:
            return await self.handler(packet)
        except Exception as exc:  # the file must never stay stuck in processing/
            log.exception("folder.handler_failed", code="folder.handler_failed", file=printable(claimed.body))
            return InboundResult(False, retry_later=True, event="folder.handler_failed", message=str(exc))

    def _metadata(self, dirs: DropDirs, claimed: _Claimed) -> object:
        """The packet's metadata as parsed JSON ({} without a metadata file); whatever does not read raises.

        The size is bounded before a byte is read, and nesting too deep for the parser (``[`` x 60000
        makes ``json`` recurse out of stack) is a ``ValueError`` like any other bad JSON.
        """
        if claimed.meta is None:
            return {}
        raw, _info = read_regular(dirs.processing, claimed.name(claimed.meta), META_MAX_BYTES, alone=True)
        try:
            return json.loads(raw)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None

    def _bad_metadata(self, claimed: _Claimed, exc: BaseException) -> InboundResult:
        message = f"unreadable packet metadata: {exc}"
        return self._refuse(claimed, InboundResult(False, event="folder.bad_metadata", message=message))

    def _packet(self, original: str, data: bytes, headers: object) -> Packet:
        if headers:
            if not isinstance(headers, dict):
                raise TypeError("the metadata is not a JSON object")
            return Packet.from_headers(data, headers, destination=str(self.folder))
        return Packet(
            body=data,
            message_id=Path(original).stem,
            from_her="",
            to_her="",
            content_type="application/xml",
            subject="",
            destination=str(self.folder),
        )

    def _refuse(self, claimed: _Claimed, result: InboundResult) -> InboundResult:
        log.warning("folder.file_refused", code=result.event, folder=str(self.folder), file=printable(claimed.body))
        return result

    # -- where files go ------------------------------------------------------------------------------

    def _file_away(self, dirs: DropDirs, claimed: _Claimed, result: InboundResult) -> str:
        """To done/ or failed/ under one fresh gateway-made stem, with the .id or .reason.txt file beside;
        returns the body's name there."""
        origin = _origin(claimed.body, claimed.meta)
        if result.accepted:
            target, sidecar = dirs.done, (".id", f"{result.reference or '-'}\n{origin}")
        else:
            reason = f"{result.code or '-'}\t{result.event or '-'}\t{result.condition or '-'}\n{result.message}\n"
            target, sidecar = dirs.failed, (".reason.txt", f"{reason}{origin}")
        moves = [(claimed.name(claimed.body), safe_suffix(claimed.body))]
        if claimed.meta is not None:
            moves.append((claimed.name(claimed.meta), ".json"))
        return self._place(dirs.processing, target, moves, sidecar, claimed.stem)

    def _place(
        self,
        source: int,
        target: int,
        moves: list[tuple[str, str]],
        sidecar: tuple[str, str],
        stem: str | None = None,
    ) -> str:
        """Rename each file to ``<stem><suffix>`` in ``target`` and write the sidecar beside them; all these
        names are reserved first (``O_EXCL``), so nothing in ``target`` is ever overwritten."""
        suffixes = [suffix for _name, suffix in moves] + [sidecar[0]]
        stem = reserve(target, suffixes, lambda: new_stem(self.clock.now()), first=stem)
        for name, suffix in moves:
            os.rename(name, f"{stem}{suffix}", src_dir_fd=source, dst_dir_fd=target)
        replace_own(target, f"{stem}{sidecar[0]}", sidecar[1].encode("utf-8"))
        return f"{stem}{moves[0][1]}"

    def _move_aside(self, dirs: DropDirs, aside: Aside) -> None:
        """A regular file that is not taken goes to failed/ with the reason; reported once either way."""
        if not self._survey.first_report(aside.name, aside.inode, aside.reason):
            return
        reason = f"-\tfolder.entry_ignored\t-\n{_NOT_TAKEN}{aside.reason}\n{_origin(aside.name, None)}"
        moves = [(aside.name, safe_suffix(aside.name))]
        placed: str | None = None
        try:
            placed = "failed/" + self._place(dirs.root, dirs.failed, moves, (".reason.txt", reason))
        except FileNotFoundError:
            return  # gone meanwhile
        except OSError as exc:  # said in the report; it stays where it is
            aside = Aside(aside.name, aside.inode, f"{aside.reason} (not moved aside: {exc.strerror or exc})")
        report_ignored(self.folder, aside.name, aside.reason, moved_to=placed)


def _not_alone(why: str) -> InboundResult:
    """A claimed file that is not the folder's alone: not read, moved aside to failed/ and reported once."""
    return InboundResult(False, event="folder.entry_ignored", message=f"{_NOT_TAKEN}{why}")


def _origin(body: str, meta: str | None) -> str:
    """The lines that trace a gateway-named file back to the file that was dropped."""
    return f"original name: {printable(body)}\n" + (f"metadata: {printable(meta)}\n" if meta else "")
