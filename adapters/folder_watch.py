"""The drop-folder watcher: takes each complete file exactly once, hands it over, and files it in done/ or failed/.

Each scan opens the folder and its ``processing/``, ``done/`` and ``failed/`` as directory fds (a link or
non-folder in their place stops the watcher, with one error line, until it is put right), looks at the
entries (:mod:`adapters.folder_scan`), and takes the complete ones: a file is renamed into
``processing/`` under ``<stem>~<name>`` - the claim: whoever renames first has it, so two scanners never
both take it - then read (from ``fstat`` on: a regular file, no larger than ``max_bytes``), handed to the
handler, and renamed to ``done/<stem><suffix>`` or ``failed/<stem><suffix>`` beside ``<stem>.id`` (the
gateway's id) or ``<stem>.reason.txt`` (KITH code, event, condition, message). Both of those name the
original file. A temporary problem puts it back under its own name for the next scan; what a killed
process left in ``processing/`` is put back at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

from adapters.base import InboundHandler, InboundResult, Packet
from adapters.folder_fs import DropDirs, move_noreplace, read_regular, rename_if_free, replace_own, reserve
from adapters.folder_names import claim_name, new_stem, printable, safe_suffix, split_claim_name
from adapters.folder_scan import Aside, Candidate, Survey, kind_of, report_ignored
from gateway.clock import Clock, SystemClock
from gateway.errors import MessageTooLarge
from gateway.log import get_logger
from gateway.xml import DEFAULT_MAX_BYTES

__all__ = ["STALE_S", "FolderWatcher"]

log = get_logger(__name__)

#: How long a temporary file (or metadata without its body) may stand still before it counts as left behind.
STALE_S = 3600.0
_META_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Claimed:
    stem: str
    body: str  # original names
    meta: str | None

    @property
    def files(self) -> list[tuple[str, str]]:
        """(name in processing/, original name), metadata first: it goes back before its body."""
        pairs = [(claim_name(self.stem, self.meta), self.meta)] if self.meta else []
        return [*pairs, (claim_name(self.stem, self.body), self.body)]


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
        self._recover_pending = False

    async def start(self) -> None:
        # files a killed process left half-handled go back first
        self._recover_pending = True
        dirs = self._open()
        if dirs is not None:
            with dirs:
                self._recover(dirs)
        self._task = asyncio.create_task(self._run(), name=f"folder-watch:{self.folder}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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
            if self._recover_pending:
                self._recover(dirs)
            candidates, asides = self._survey.look(dirs.root)
            for aside in asides:
                self._move_aside(dirs, aside)
            taken = 0
            for candidate in candidates:
                taken += await self._take(dirs, candidate)
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

    # -- taking one file ------------------------------------------------------------------------------

    async def _take(self, dirs: DropDirs, candidate: Candidate) -> int:
        stem = new_stem(self.clock.now())
        try:  # the claim: a fresh random name in processing/, so nothing there is overwritten
            rename_if_free(dirs.root, candidate.body, dirs.processing, claim_name(stem, candidate.body))
        except FileNotFoundError:
            return 0  # another scanner has it
        meta = candidate.meta
        if meta is not None:
            try:
                rename_if_free(dirs.root, meta, dirs.processing, claim_name(stem, meta))
            except FileNotFoundError:
                meta = None
        claimed = _Claimed(stem, candidate.body, meta)
        result = await self._handle(dirs, candidate, claimed)
        if result is None or result.retry_later:
            self._put_back(dirs, claimed)
            return 0
        self._file_away(dirs, claimed, result)
        return 1

    async def _handle(self, dirs: DropDirs, candidate: Candidate, claimed: _Claimed) -> InboundResult | None:
        """The handler's verdict, the watcher's own refusal, or None when the file changed after it settled."""
        try:
            data, after = read_regular(dirs.processing, claim_name(claimed.stem, claimed.body), self.max_bytes)
        except MessageTooLarge as exc:
            return self._refuse(claimed, InboundResult.refused(exc))
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            return self._refuse(claimed, InboundResult(False, event="folder.unreadable", message=f"not read: {why}"))
        if (after.st_ino, after.st_size, after.st_mtime_ns) != candidate.sig[:3]:
            return None  # written to after it settled: back it goes, to settle again
        try:
            headers: object = {}
            if claimed.meta is not None:
                raw, _info = read_regular(dirs.processing, claim_name(claimed.stem, claimed.meta), _META_MAX_BYTES)
                headers = json.loads(raw)
            packet = self._packet(claimed.body, data, headers)
        except (OSError, MessageTooLarge, ValueError, TypeError, AttributeError) as exc:  # JSON, UTF-8, fields
            return self._refuse(
                claimed, InboundResult(False, event="folder.bad_metadata", message=f"unreadable packet metadata: {exc}")
            )
        try:
            return await self.handler(packet)
        except Exception as exc:  # the file must never stay stuck in processing/
            log.exception("folder.handler_failed", code="folder.handler_failed", file=printable(claimed.body))
            return InboundResult(False, retry_later=True, event="folder.handler_failed", message=str(exc))

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

    def _file_away(self, dirs: DropDirs, claimed: _Claimed, result: InboundResult) -> None:
        """To done/ or failed/ under one fresh gateway-made stem, with the .id or .reason.txt file beside."""
        origin = _origin(claimed.body, claimed.meta)
        if result.accepted:
            target, sidecar = dirs.done, (".id", f"{result.reference or '-'}\n{origin}")
        else:
            reason = f"{result.code or '-'}\t{result.event or '-'}\t{result.condition or '-'}\n{result.message}\n"
            target, sidecar = dirs.failed, (".reason.txt", f"{reason}{origin}")
        moves = [(claim_name(claimed.stem, claimed.body), safe_suffix(claimed.body))]
        if claimed.meta is not None:
            moves.append((claim_name(claimed.stem, claimed.meta), ".json"))
        self._place(dirs.processing, target, moves, sidecar, claimed.stem)

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
        reason = f"-\tfolder.entry_ignored\t-\nnot taken: {aside.reason}\n{_origin(aside.name, None)}"
        moves = [(aside.name, safe_suffix(aside.name))]
        placed: str | None = None
        try:
            placed = "failed/" + self._place(dirs.root, dirs.failed, moves, (".reason.txt", reason))
        except FileNotFoundError:
            return  # gone meanwhile
        except OSError as exc:  # said in the report; it stays where it is
            aside = Aside(aside.name, aside.inode, f"{aside.reason} (not moved aside: {exc.strerror or exc})")
        report_ignored(self.folder, aside.name, aside.reason, moved_to=placed)

    def _put_back(self, dirs: DropDirs, claimed: _Claimed) -> None:
        self._return(dirs, claimed.stem, claimed.files)

    def _return(self, dirs: DropDirs, stem: str, files: list[tuple[str, str]]) -> None:
        """Back into the folder for the next scan, under the original names - or, if a new file has one of
        them meanwhile, all under ``<stem>-<name>`` (a pair keeps one stem, so its parts still match)."""
        clash = any(_other_file_there(dirs, name, original) for name, original in files)
        for name, original in files:
            try:
                move_noreplace(dirs.processing, name, dirs.root, f"{stem}-{original}" if clash else original)
            except FileExistsError:
                if clash or _other_file_there(dirs, name, original):
                    raise
                os.unlink(name, dir_fd=dirs.processing)  # a put-back a crash cut short: it is there already

    def _recover(self, dirs: DropDirs) -> None:
        """Put back what a killed process left in processing/ (metadata before bodies, as they were written)."""
        self._recover_pending = False
        groups: dict[str, list[tuple[str, str]]] = {}
        for name in sorted(os.listdir(dirs.processing), key=lambda n: (not n.endswith(".json"), n)):
            try:
                info = os.stat(name, dir_fd=dirs.processing, follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = kind_of(info.st_mode)
            if kind is not None:
                report_ignored(self.folder / "processing", name, f"{kind}; only regular files are taken")
                continue
            stem, original = split_claim_name(name)
            groups.setdefault(stem or new_stem(self.clock.now()), []).append((name, original))
        for stem, files in groups.items():
            self._return(dirs, stem, files)


def _other_file_there(dirs: DropDirs, name: str, original: str) -> bool:
    """Whether the folder has a file called ``original`` that is not ``processing/<name>`` itself."""
    try:
        there = os.stat(original, dir_fd=dirs.root, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.stat(name, dir_fd=dirs.processing, follow_symlinks=False)
    return (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino)


def _origin(body: str, meta: str | None) -> str:
    """The lines that trace a gateway-named file back to the file that was dropped."""
    return f"original name: {printable(body)}\n" + (f"metadata: {printable(meta)}\n" if meta else "")
