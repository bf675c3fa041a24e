"""The ``folder`` adapter: drop folders, for EHR integration and for peers that share a file area.

Writing is atomic: the bytes go to a temporary name in the same folder, are fsynced and then renamed,
so a reader never sees half a file. Each packet is two files: ``<id>.json`` (the routing metadata) is
written first, the body ``<id>.msg`` last; a reader takes a packet only once its body exists.

Reading: an inbound folder is scanned every ``poll_interval_s``; each file is first moved into
``processing/`` (an atomic claim, so it is taken exactly once even if two scanners race), handed to the
gateway, and then moved to ``done/`` - or to ``failed/`` beside a ``<name>.reason.txt`` saying why. A
file whose handling hit a temporary problem goes back to the inbound folder for the next scan, and files
left in ``processing/`` by a killed process are taken up again at start.

Plain XML files dropped by an EHR (no ``.json`` beside them) are handed over with empty routing metadata;
the gateway reads sender and receiver from the message itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from pathlib import Path

from adapters.base import InboundHandler, InboundResult, Packet, Transport, TransportContext
from gateway.errors import PermanentDeliveryError, TransportError
from gateway.log import get_logger

__all__ = ["FolderTransport", "FolderWatcher", "atomic_write"]

log = get_logger(__name__)


def atomic_write(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` so that no reader ever sees a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


class FolderTransport(Transport):
    name = "folder"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        inbox = self.context.options.get("inbox")
        self._watcher: FolderWatcher | None = None
        self._inbox = Path(str(inbox)) if inbox else None
        self._interval = float(self.context.options.get("poll_interval_s", 1.0))

    async def send(self, packet: Packet) -> None:
        folder = Path(packet.destination.removeprefix("file://"))
        if not packet.destination:
            raise PermanentDeliveryError("folder adapter: the party has no folder endpoint.")
        stem = packet.message_id
        meta = json.dumps(packet.headers(), indent=1).encode()
        try:
            await asyncio.to_thread(atomic_write, folder, f"{stem}.json", meta)
            await asyncio.to_thread(atomic_write, folder, f"{stem}.msg", packet.body)
        except OSError as exc:
            raise TransportError(f"Cannot write to {folder}: {exc.strerror or exc}.") from exc

    async def start(self, handler: InboundHandler) -> None:
        if self._inbox is not None:
            self._watcher = FolderWatcher(self._inbox, handler, poll_interval_s=self._interval)
            await self._watcher.start()

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None


class FolderWatcher:
    """Takes every file dropped into ``folder`` exactly once and hands it to ``handler``."""

    def __init__(self, folder: Path, handler: InboundHandler, *, poll_interval_s: float = 1.0) -> None:
        self.folder = folder
        self.handler = handler
        self.poll_interval_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None
        for sub in ("processing", "done", "failed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        # files a killed process left half-handled go first
        for leftover in sorted((self.folder / "processing").iterdir()):
            if leftover.is_file():
                os.replace(leftover, self.folder / leftover.name)
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
        taken = 0
        for body in sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            if body.suffix == ".json":
                continue
            meta = body.with_suffix(".json")
            taken += await self._take(body, meta if meta.exists() else None)
        return taken

    async def _take(self, body: Path, meta: Path | None) -> int:
        processing = self.folder / "processing"
        claimed = processing / body.name
        try:
            os.replace(body, claimed)  # the claim: whoever renames first has it
        except FileNotFoundError:
            return 0
        claimed_meta = None
        if meta is not None:
            claimed_meta = processing / meta.name
            os.replace(meta, claimed_meta)
        try:
            data = claimed.read_bytes()
            headers = json.loads(claimed_meta.read_bytes()) if claimed_meta else {}
            if headers:
                packet = Packet.from_headers(data, headers, destination=str(self.folder))
            else:
                packet = Packet(
                    body=data,
                    message_id=body.stem,
                    from_her="",
                    to_her="",
                    content_type="application/xml",
                    subject="",
                    destination=str(self.folder),
                )
        except (ValueError, TypeError, AttributeError) as exc:  # a metadata file that does not read
            result = InboundResult(False, event="folder.bad_metadata", message=f"unreadable packet metadata: {exc}")
        else:
            try:
                result = await self.handler(packet)
            except Exception as exc:  # the file must never stay stuck in processing/
                log.exception("folder.handler_failed", code="folder.handler_failed", file=body.name)
                result = InboundResult(False, retry_later=True, event="folder.handler_failed", message=str(exc))
        if result.retry_later:
            for path in (claimed, claimed_meta):
                if path is not None:
                    os.replace(path, self.folder / path.name)
            return 0
        outcome = "done" if result.accepted else "failed"
        for path in (claimed, claimed_meta):
            if path is not None:
                os.replace(path, self.folder / outcome / path.name)
        if not result.accepted:
            reason = f"{result.code or '-'}\t{result.event or '-'}\t{result.condition or '-'}\n{result.message}\n"
            atomic_write(self.folder / "failed", f"{body.name}.reason.txt", reason.encode("utf-8"))
        elif result.reference:
            atomic_write(self.folder / "done", f"{body.name}.id", f"{result.reference}\n".encode())
        return 1
