"""The ``edi2`` transport: the national network through NHN's Meldingstjener REST API ("EDI 2.0").

NHN does the ebXML, the CMS, the transport receipts and the AppRec envelopes towards every EDI user, so
this channel carries the message XML itself (``carries = "plain"``), as UTF-8, and is used for every party
whose register entry says ``adapter = "edi2"`` and as the region's default route for HER-ids outside the
register. One ``POST`` per delivery (its receiver), so each receiver's delivery keeps its own retries and
state.

Receiving (API version 3): at start every local HER-id is declared (``PUT /mshconfigurations``); then the
global notification log is followed from the last *processed* offset, kept in the store (offsets have gaps
and redelivery is normal) - over the SSE stream when ``receive = "stream"``, polling while the stream is
down. A new message is fetched, handed to the gateway, and marked downloaded only once it is stored; a
notification about a message we sent (its transport state, its AppRec info) settles that delivery. Version
2 polls the unread messages instead, and the status of what it sent. An AppRec the gateway sends for a
message that came this way goes back as NHN's ``apprec`` call (status and 8221 errors), since NHN builds
the AppRec XML towards the EDI sender.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from adapters.edi2.ar import AddressRegister, refusal
from adapters.edi2.dpop import SigningKey
from adapters.edi2.helseid import HelseIdClient
from adapters.edi2.msh import MshClient, Notification
from gateway import __version__
from gateway.errors import ConfigError, GatewayError, TransportError
from gateway.log import get_logger
from gateway.routing import Listing
from gateway.transport import InboundHandler, Packet, Transport, TransportContext
from gateway.xml import parse

__all__ = ["Edi2Transport", "as_utf8"]

log = get_logger(__name__)

_DECLARED = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_DECLARATION = re.compile(r"""^(\ufeff?<\?xml[^>]*?encoding\s*=\s*["'])[A-Za-z0-9._:-]+(["'])""")
# the notifications about a message we sent that can change its outcome (MessageSentStateUpdated only says
# NHN passed it on: no status call for it)
_OUTCOME_TYPES = {"MessageDeliveryStateUpdated", "MessageApprecInfoUpdated", "RefusedMessage"}
#: v2 keeps the NHN ids of what it sent and awaits an outcome for in one list; beyond this the oldest go
_MAX_PENDING = 10000
#: how much of NHN's description of a transport rejection is kept in the delivery's trace
_MAX_REASON = 500


class Edi2Transport(Transport):
    name = "edi2"
    carries = "plain"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        opts = self.context.options
        self.base_url = _required(opts, "base_url")
        self.api_version = str(opts.get("api_version", "3"))
        if self.api_version not in ("2", "3"):
            raise ConfigError(f"[adapters.edi2] api_version must be '3' or '2', not {self.api_version!r}.")
        self.receive_mode = str(opts.get("receive", "stream"))
        if self.receive_mode not in ("stream", "poll"):
            raise ConfigError(f"[adapters.edi2] receive must be 'stream' or 'poll', not {self.receive_mode!r}.")
        self.poll_interval_s = float(opts.get("poll_interval_s", 2.0))
        self.client_locked = bool(opts.get("client_locked", True))
        key_file = Path(_required(opts, "key_file"))
        self.key_file = key_file if key_file.is_absolute() else Path(self.context.data_dir) / key_file
        self._session: aiohttp.ClientSession | None = None
        self._msh: MshClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._configured = self.api_version == "2" or not self.context.local_her_ids  # v2 has no configurations
        self._configuring = asyncio.Lock()
        self._pending_lock = asyncio.Lock()

    # -- life ---------------------------------------------------------------------------------------------

    async def _client(self) -> MshClient:
        if self._msh is None:
            opts = self.context.options
            self._session = aiohttp.ClientSession()
            key = SigningKey.from_file(self.key_file, alg=opts.get("algorithm"))
            helseid = HelseIdClient(
                _required(opts, "helseid_url"), _required(opts, "client_id"), key, session=self._session
            )
            self._msh = MshClient(
                self.base_url,
                helseid,
                session=self._session,
                api_version="3" if self.api_version == "3" else "2",
                source_system=str(opts.get("source_system", f"sio-gateway, v{__version__}")),
                application=("sio-gateway", __version__),
            )
            if opts.get("ar_url"):
                register = AddressRegister(
                    str(opts["ar_url"]),
                    str(opts.get("ar_username", "")),
                    str(opts.get("ar_password", "")),
                    session=self._session,
                )
                self.directory = AddressRegisterDirectory(register)
        return self._msh

    async def start(self, handler: InboundHandler) -> None:
        await self._client()
        if self.context.local_her_ids:
            self._task = asyncio.create_task(self._receive(handler), name="edi2-receive")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._msh = None

    # -- sending ------------------------------------------------------------------------------------------

    async def _configure(self, msh: MshClient) -> None:
        """Declare every local HER-id at NHN (v3) before anything is sent or fetched for it: NHN refuses
        requests for a HER-id without a configuration. Once per process; the send path and the receive
        loop share it."""
        if self._configured:
            return
        async with self._configuring:
            if not self._configured:
                await msh.configure(self.context.local_her_ids, client_locked=self.client_locked)
                self._configured = True

    async def send(self, packet: Packet) -> None:
        msh = await self._client()
        await self._configure(msh)
        if packet.subject == "APPREC" and await self._answer(msh, packet):
            return
        message_id = await msh.send(
            sender_her=packet.from_her, receiver_hers=[packet.to_her], msg_type=packet.subject, xml=as_utf8(packet.body)
        )
        state = self.context.state
        await state.set(f"out:{message_id}", json.dumps({"reference": packet.reference, "receiver": packet.to_her}))
        if self.api_version == "2":  # v2 has no notifications: its statuses are polled
            async with self._pending_lock:  # concurrent sends must not lose each other's entries
                pending = json.loads(await state.get("pending") or "[]")
                if len(pending) >= _MAX_PENDING:
                    log.warning("edi2.pending_trimmed", code="edi2.pending_trimmed", dropped=pending[0])
                await state.set("pending", json.dumps([*pending[-(_MAX_PENDING - 1) :], message_id]))
        log.info("edi2.sent", nhn_message_id=message_id, receiver=packet.to_her)

    async def _answer(self, msh: MshClient, packet: Packet) -> bool:
        """An AppRec for a message that came through NHN goes back as NHN's apprec call; False when the
        original did not come this way (then the AppRec is sent as a message)."""
        apprec = _read_apprec(packet.body)
        if apprec is None:
            return False
        original_msg_id, status, errors = apprec
        original = await self.context.state.get(f"in:{packet.to_her}:{original_msg_id}:{packet.from_her}")
        if original is None:
            return False
        # the entry stays: if this process dies before the worker records the AppRec as sent, its next attempt
        # must post it to NHN again (at-least-once), never send it as a message
        await msh.apprec(original, sender_her=packet.from_her, status=status, errors=errors)
        log.info("edi2.apprec_posted", nhn_message_id=original, status=status, receiver=packet.to_her)
        return True

    # -- receiving ----------------------------------------------------------------------------------------

    async def _receive(self, handler: InboundHandler) -> None:
        """Follow NHN until stopped; every failure is logged and the loop goes on after a pause."""
        msh = await self._client()
        while True:
            try:
                await self._configure(msh)
                if self.api_version == "2":
                    await self._poll_v2(msh, handler)
                elif self.receive_mode == "stream":
                    await self._follow_stream(msh, handler)
                else:
                    await self._poll_v3(msh, handler)
            except asyncio.CancelledError:
                raise
            except GatewayError as exc:
                log.warning("edi2.receive_failed", code=exc.event, error=exc.message)
            except Exception:
                log.exception("edi2.receive_failed", code="edi2.receive_failed")
            await asyncio.sleep(self.poll_interval_s)

    async def _offset(self) -> int:
        return int(await self.context.state.get("offset") or 0)

    async def _poll_v3(self, msh: MshClient, handler: InboundHandler) -> None:
        """Fetch and process notifications until the log has no more; one page at a time."""
        while True:
            offset = await self._offset()
            page = await msh.notifications(self.context.local_her_ids, offset=offset, count=100)
            fresh = [n for n in page if n.offset > offset]
            for notification in fresh:
                await self._process(msh, handler, notification)
            if not fresh:
                return

    async def _follow_stream(self, msh: MshClient, handler: InboundHandler) -> None:
        """Catch up by polling, then follow the SSE stream from the processed offset until it ends or drops
        (the loop above polls, then opens it again)."""
        await self._poll_v3(msh, handler)
        offset = await self._offset()
        async for notification in msh.stream(self.context.local_her_ids, offset=offset):
            if notification.offset > await self._offset():
                await self._process(msh, handler, notification)

    async def _process(self, msh: MshClient, handler: InboundHandler, notification: Notification) -> None:
        """One notification; the offset moves on only once it is dealt with (stored, or settled)."""
        if notification.type == "NewMessage":
            await self._take(msh, handler, notification.related_message_id, notification.receiver_her)
        elif notification.type in _OUTCOME_TYPES:
            await self._settle(msh, notification.related_message_id, notification.description)
        await self.context.state.set("offset", str(notification.offset))

    async def _take(self, msh: MshClient, handler: InboundHandler, message_id: str, receiver_her: str) -> None:
        meta = await msh.message(message_id)
        body = await msh.business_document(message_id)
        sender = str(meta.get("senderHerId", ""))
        packet = Packet(
            body=body,
            message_id=message_id,
            from_her=sender,
            to_her=receiver_her,
            content_type="application/xml",
            subject=str(meta.get("businessDocumentMsgType") or meta.get("messageTypeIdentificator") or ""),
        )
        msg_id = str(meta.get("businessDocumentId") or "")
        if msg_id:  # before the hand-over, which commits the AppRec too: its send must find NHN's id, even
            # when this process dies before the next line (the AppRec then goes as NHN's apprec call, not as
            # a message); a refused message leaves a harmless entry
            await self.context.state.set(f"in:{sender}:{msg_id}:{receiver_her}", message_id)
        result = await handler(packet)
        if result.retry_later:  # our side cannot take it now: NHN keeps it (not downloaded), we come back to it
            raise TransportError(f"The gateway cannot take NHN message {message_id} now: {result.message}")
        await msh.downloaded(message_id, receiver_her)  # stored - or refused for good, never to be taken again
        log.info("edi2.received", nhn_message_id=message_id, receiver=receiver_her, accepted=result.accepted)

    async def _settle(self, msh: MshClient, message_id: str, description: str = "") -> bool:
        """What NHN says of a message we sent: a transport rejection or abandonment (with the notification's
        description, when one came), or its AppRec. True once nothing more is to come (its record is then
        forgotten)."""
        known = await self.context.state.get(f"out:{message_id}")
        reports = self.context.reports
        if known is None or reports is None:
            return known is None
        sent = json.loads(known)
        done = False
        for status in await msh.status(message_id):
            if status.receiver_her != sent["receiver"]:
                continue
            failed = {"Rejected": reports.transport_refused, "Abandoned": reports.transport_abandoned}
            if status.transport_state in failed:
                why = "rejected by the receiver's system" if status.transport_state == "Rejected" else (
                    "abandoned: NHN's resends to the receiver got no receipt")  # fmt: skip
                reason = f"NHN: {why}" + (f" ({description[:_MAX_REASON]})" if description else "")
                await failed[status.transport_state](sent["reference"], sent["receiver"], reason)
                done = True
            if status.apprec_status is not None:
                await reports.receipt(sent["reference"], sent["receiver"], status.apprec_status, status.apprec_errors)
                done = True
        if done:
            await self.context.state.set(f"out:{message_id}", None)
        return done

    async def _poll_v2(self, msh: MshClient, handler: InboundHandler) -> None:
        for message_id, receiver_her in await msh.unread(self.context.local_her_ids):
            await self._take(msh, handler, message_id, receiver_her)
        pending = json.loads(await self.context.state.get("pending") or "[]")
        settled = {m for m in pending if await self._settle(msh, m)}
        if settled:
            async with self._pending_lock:  # sends that came in meanwhile stay on the list
                current = json.loads(await self.context.state.get("pending") or "[]")
                await self.context.state.set("pending", json.dumps([m for m in current if m not in settled]))


class AddressRegisterDirectory:
    """The routing's :class:`~gateway.routing.Directory` from NHN's Adresseregister."""

    def __init__(self, register: AddressRegister) -> None:
        self.register = register

    async def listing(self, her_id: str) -> Listing:
        party = await self.register.lookup(her_id)
        return Listing(refusal(her_id, party), party.label if party is not None else "")


def as_utf8(xml: bytes) -> bytes:
    """The document as NHN takes it: UTF-8 with a declaration that says so. An ISO-8859-1 (or UTF-16)
    message is re-encoded character for character; nothing else changes. (The gateway judged the document
    at submit, so only its declared encoding is read here - not the whole tree.)"""
    if xml.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = xml.decode("utf-16")
    else:
        body = xml.removeprefix(codecs.BOM_UTF8)
        declared = _DECLARED.match(body)
        encoding = declared.group(1).decode("ascii") if declared else "utf-8"
        if codecs.lookup(encoding).name == "utf-8":
            return body
        text = body.decode(encoding)
    return _DECLARATION.sub(r"\1UTF-8\2", text, count=1).encode("utf-8")


def _read_apprec(xml: bytes) -> tuple[str, str, tuple[tuple[str, str], ...]] | None:
    """OriginalMsgId, status and errors of an AppRec the gateway built (trusted: never a peer's)."""
    try:
        root = parse(xml).root
    except GatewayError:
        return None
    status = root.find("{*}Status")
    original = root.find("{*}OriginalMsgId/{*}Id")
    if status is None or original is None or not (original.text or "").strip():
        return None
    errors = tuple(
        ((e.get("V") or "").strip(), (e.get("OT") or e.get("DN") or "").strip()) for e in root.findall("{*}Error")
    )
    return (original.text or "").strip(), (status.get("V") or "").strip(), errors


def _required(options: Any, key: str) -> str:
    value = options.get(key)
    if not value:
        raise ConfigError(f"[adapters.edi2] {key} is required.")
    return str(value)

