"""Handing received messages to the local EHR - into its folder, or by POST to its callback URL - as two
transports like any other (``ehr:folder``, ``ehr:callback``), so the delivery worker treats them alike.

(The default, the inbox the EHR pulls from over the API, needs no handing over: the message waits in the
store until the EHR acknowledges it.) Both hand-overs are at-least-once: a folder write is atomic and a
callback is retried until the EHR answers 2xx, so the EHR must treat the gateway message id
(``X-Gateway-Message-Id``, the packet's ``reference``) as its duplicate key. Both carry the XML itself:
the channel stays inside the organisation.

A synchronous request (Helsenorge's ``_sync`` queue) is answered by the party's EHR at its ``sync_url``
(:class:`EhrSync`): the request's XML is POSTed there and the reply is the response body.

The EHR's folder is shared with the EHR, so it is written as a drop folder is (adapters/folder_fs.py): a
folder that is a symbolic link is not entered, and a file already there under the message's name is
never overwritten - the same bytes count as delivered (a retried hand-over), anything else is a
transport error the operator sees and the queue retries.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from adapters.bodies import read_body
from adapters.folder_fs import atomic_write
from gateway.errors import NoRoute, SyncUnanswerable, TransportError
from gateway.transport import Packet, Transport, TransportContext

__all__ = ["EhrCallback", "EhrFolder", "EhrSync"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class EhrFolder(Transport):
    """Writes the message into the EHR's folder (the packet's destination) as ``<kind>-<id>.xml``."""

    name = "ehr:folder"
    carries = "plain"
    completes = True

    async def send(self, packet: Packet) -> None:
        if not packet.destination:
            raise NoRoute(f"HER-id {packet.to_her} has no EHR folder configured.")
        folder = Path(packet.destination)
        name = _SAFE.sub("_", f"{packet.kind or 'message'}-{packet.reference}.xml")
        try:
            await asyncio.to_thread(atomic_write, folder, name, packet.body)
        except FileExistsError as exc:
            raise TransportError(f"Cannot write {name} to the EHR folder {folder}: {exc.strerror}.") from exc
        except OSError as exc:
            raise TransportError(f"Cannot write to the EHR folder {folder}: {exc.strerror or exc}.") from exc


class EhrCallback(Transport):
    """POSTs the message to the EHR's callback URL (the packet's destination); 2xx means the EHR has it."""

    name = "ehr:callback"
    carries = "plain"
    completes = True

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, packet: Packet) -> None:
        url = packet.destination
        if not url:
            raise NoRoute(f"HER-id {packet.to_her} has no EHR callback configured.")
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.context.send_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        headers = {
            "Content-Type": "application/xml",
            "X-Gateway-Message-Id": packet.reference,
            "X-Msg-Id": packet.msg_id,
            "X-Kind": packet.kind,
            "X-From-Her-Id": packet.from_her,
            "X-To-Her-Id": packet.to_her,
        }
        try:
            async with self._session.post(url, data=packet.body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                raise TransportError(f"The EHR callback {url} answered {response.status}.")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"The EHR callback {url} failed: {type(exc).__name__}.") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EhrSync:
    """Asks a local party's EHR to answer a synchronous request: the request's XML is POSTed to its
    ``sync_url``, and a 200 with the reply's XML is the answer. Anything else - another status, no answer
    within the time, a body over ``max_bytes`` - is :class:`SyncUnanswerable` (the requester is told, in
    words that name nothing of ours)."""

    _PUBLIC = "The receiver's system could not answer the request."

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, url: str, content: bytes, headers: dict[str, str], *, timeout_s: float) -> bytes:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=content,
                headers={"Content-Type": "application/xml", **headers},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if response.status != 200:
                    raise SyncUnanswerable(
                        f"The EHR's sync endpoint {url} answered {response.status}.", public=self._PUBLIC
                    )
                body = None
                if (response.content_length or 0) <= self.max_bytes:
                    body = await read_body(response.content, self.max_bytes)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SyncUnanswerable(
                f"The EHR's sync endpoint {url} failed: {type(exc).__name__}.", public=self._PUBLIC
            ) from exc
        if body is None:
            raise SyncUnanswerable(f"The EHR's answer is over {self.max_bytes} bytes.", public=self._PUBLIC)
        return body

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
