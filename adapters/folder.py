"""The ``folder`` adapter: drop folders, for EHR integration and for peers that share a file area.

Writing is atomic and never overwrites: the bytes go to a temporary dotfile in the same folder, are
fsynced and then published under their name with a hard link, so a reader never sees half a file (see
:mod:`adapters.folder_fs`). Each packet is two files: ``<id>.json`` (the routing metadata) is written
first, the body ``<id>.msg`` last; a reader takes a packet only once its body exists.

Reading (:class:`~adapters.folder_watch.FolderWatcher`): an inbound folder is scanned every
``poll_interval_s``; a file is taken once it has stood still for ``settle_s``, is moved into
``processing/`` (an atomic claim, so it is taken exactly once even if two scanners race), handed to the
gateway, and then moved to ``done/`` - or to ``failed/`` beside a reason file saying why - under a name
of the gateway's own. Entries that are not taken are reported once. Nothing is read or written through
a symbolic link, and no dropped file with another hard link is read. Several gateway processes may
watch one folder: a claim is put back only when the watcher that made it is gone.

Plain XML files dropped by an EHR (no ``.json`` beside them) are handed over with empty routing metadata;
the gateway reads sender and receiver from the message itself.

Options (``[adapters.folder]``): ``inbox`` (the folder to watch; none: send only), ``poll_interval_s``
(1.0), ``settle_s`` (1.0) and ``max_bytes`` (the gateway's message cap, which the gateway passes in).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from adapters.folder_fs import atomic_write
from adapters.folder_watch import FolderWatcher
from gateway.errors import PermanentDeliveryError, TransportError
from gateway.transport import InboundHandler, Packet, Transport, TransportContext
from gateway.xml import DEFAULT_MAX_BYTES

__all__ = ["FolderTransport", "FolderWatcher", "atomic_write"]


class FolderTransport(Transport):
    name = "folder"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        options = self.context.options
        inbox = options.get("inbox")
        self._watcher: FolderWatcher | None = None
        self._inbox = Path(str(inbox)) if inbox else None
        self._interval = float(options.get("poll_interval_s", 1.0))
        self._settle_s = float(options.get("settle_s", 1.0))
        self._max_bytes = int(options.get("max_bytes", DEFAULT_MAX_BYTES))

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
            self._watcher = FolderWatcher(
                self._inbox,
                handler,
                poll_interval_s=self._interval,
                settle_s=self._settle_s,
                max_bytes=self._max_bytes,
            )
            await self._watcher.start()

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
