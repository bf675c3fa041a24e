"""Following NHN for the edi2 adapter: the messages NHN holds for the region's HER-ids, and what NHN says of
the messages the gateway sent.

API version 3 follows the global notification log from the last *processed* offset, kept in the store
(offsets have gaps and redelivery is normal) - over the SSE stream when ``receive = "stream"``, polling while
the stream is down. A new message is fetched, handed to the gateway, and marked downloaded only once it is
stored - or refused for good, and then answered with a rejecting AppRec through NHN (the sender is told,
never left waiting). A notification about a message we sent (its transport state, its AppRec info) settles
that delivery. Version 2 polls the unread messages instead, and the status of what it sent.

One notification that can never be dealt with must not stop the region's inbound for good: when NHN keeps
refusing a call about it (404, 400), its answer cannot be read, or the gateway fails on it (a bug), it is
skipped once that has gone on for :data:`_TRIES` attempts and ``skip_after_s`` (10 minutes: a proxy's
answers during NHN's maintenance pass), with one loud ``edi2.notification_skipped`` line naming NHN's message
id; the message stays at NHN, not downloaded. NHN, the network or the store being down is never a reason to
skip: the loop waits and tries again from the same offset.

A HER-id the adapter had to leave out (another client held it) is caught up once it is ours again: its
notifications from where it was left out up to where the others had got are read for it alone
(:meth:`Ledger.catch_ups`), so nothing that came for it meanwhile is passed over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

from adapters.edi2.ledger import Ledger
from adapters.edi2.msh import MshClient, Notification
from gateway.errors import ChannelLocked, GatewayError, NotAuthorized, PermanentDeliveryError, TransportError
from gateway.log import get_logger
from gateway.transport import InboundHandler, InboundResult, Packet, TransportContext

__all__ = ["Follower"]

log = get_logger(__name__)

# the notifications about a message we sent that can change its outcome (MessageSentStateUpdated only says
# NHN passed it on: no status call for it)
_OUTCOME_TYPES = {"MessageDeliveryStateUpdated", "MessageApprecInfoUpdated", "RefusedMessage"}
#: how much of NHN's description of a transport rejection is kept in the delivery's trace
_MAX_REASON = 500
#: attempts at one notification (or v2 message) that keeps failing before it may be skipped
_TRIES = 5
#: v2: unread messages given up on that are remembered (beyond, the oldest are tried again)
_MAX_SKIPPED = 10000
#: v2: the statuses asked for in one poll (the rest in the next ones, in turn)
_STATUS_PER_POLL = 50
#: a MsgId longer than this is not remembered (its AppRec then goes as a message)
_MAX_MSG_ID = 200


class _NotTakenNow(TransportError):
    """The gateway could not take a received message now (its store is busy, a key is missing): NHN keeps
    it, and the adapter comes back to it."""

    def __init__(self, message: str, *, cause: str | None) -> None:
        super().__init__(message)
        self.cause = cause


class Follower:
    """The receive loop of one edi2 transport. ``her_ids`` gives the local HER-ids to follow now (those not
    locked by another client); ``prepare`` declares them at NHN (v3) before each round; ``locked`` is told when
    NHN answers 423 to the loop (another client took one of them since), so that they are declared anew."""

    def __init__(
        self,
        msh: MshClient,
        ledger: Ledger,
        context: TransportContext,
        handler: InboundHandler,
        *,
        receive_mode: str,
        poll_interval_s: float,
        her_ids: Callable[[], tuple[str, ...]],
        prepare: Callable[[], Awaitable[None]],
        locked: Callable[[], None],
        skip_after_s: float = 600.0,
    ) -> None:
        self.msh = msh
        self.ledger = ledger
        self.context = context
        self.handler = handler
        self.receive_mode = receive_mode
        self.poll_interval_s = poll_interval_s
        self.her_ids = her_ids
        self.prepare = prepare
        self.locked = locked
        self.skip_after_s = skip_after_s
        self._failures: dict[Hashable, tuple[int, float]] = {}  # tries, and when the first failed
        self._skipped: dict[str, None] = {}  # v2: unread messages given up on in this process, oldest first
        self._status_cursor = 0

    async def run(self) -> None:
        """Follow NHN until cancelled; every failure is logged and the loop goes on after a pause (NHN's
        ``Retry-After`` when it gave one)."""
        while True:
            wait = self.poll_interval_s
            try:
                await self.prepare()
                her_ids = self.her_ids()
                if not her_ids:
                    pass  # every HER-id is held by another client: nothing to follow until that is sorted out
                elif self.msh.api_version == "2":
                    await self._poll_v2(her_ids)
                elif self.receive_mode == "stream":
                    await self._follow_stream(her_ids)
                else:
                    await self._catch_up(her_ids)
                    await self._poll_v3(her_ids)
            except asyncio.CancelledError:
                raise
            except GatewayError as exc:
                if isinstance(exc, ChannelLocked | NotAuthorized):  # about one of ours, since they were declared
                    self.locked()
                if isinstance(exc, TransportError) and exc.retry_after_s:
                    wait = max(wait, exc.retry_after_s)
                log.warning("edi2.receive_failed", code="edi2.receive_failed", cause=exc.event, error=exc.message)
            except Exception:
                log.exception("edi2.receive_failed", code="edi2.receive_failed")
            await asyncio.sleep(wait)

    # -- v3 -----------------------------------------------------------------------------------------------

    async def _poll_v3(self, her_ids: tuple[str, ...]) -> None:
        """Fetch and process notifications until the log has no more; one page at a time."""
        while True:
            offset = await self.ledger.offset()
            page = await self.msh.notifications(her_ids, offset=offset, count=100)
            fresh = [n for n in page if n.offset > offset]
            for notification in fresh:
                await self._process(notification)
            if not fresh:
                return

    async def _follow_stream(self, her_ids: tuple[str, ...]) -> None:
        """Catch up by polling, then follow the SSE stream from the processed offset until it ends or drops
        (the loop polls, then opens it again)."""
        await self._catch_up(her_ids)
        await self._poll_v3(her_ids)
        async for notification in self.msh.stream(her_ids, offset=await self.ledger.offset()):
            if notification.offset > await self.ledger.offset():
                await self._process(notification)

    async def _process(self, notification: Notification) -> None:
        """One notification; the offset moves on only once it is dealt with (stored, or settled) - or
        skipped, loudly, when it never can be."""
        await self._handle(notification)
        await self.ledger.processed(notification.offset)

    async def _handle(self, notification: Notification) -> None:
        try:
            if notification.type == "NewMessage":
                await self._take(notification.related_message_id, notification.receiver_her)
            elif notification.type in _OUTCOME_TYPES:
                await self._settle(notification.related_message_id, notification.description)
        except Exception as exc:
            if not self._gives_up(("offset", notification.offset), exc):
                raise
            log.error(
                "edi2.notification_skipped",
                code="edi2.notification_skipped",
                offset=notification.offset,
                type=notification.type,
                nhn_message_id=notification.related_message_id,
                cause=_cause(exc),
            )
        self._failures.pop(("offset", notification.offset), None)

    async def _catch_up(self, her_ids: tuple[str, ...]) -> None:
        """The notifications a HER-id missed while it was left out, read for it alone, up to where the others
        had got when it came back."""
        for her_id, (start, end) in (await self.ledger.catch_ups()).items():
            if her_id not in her_ids:
                continue
            offset = start
            while offset < end:
                listed = await self.msh.notifications((her_id,), offset=offset, count=100)
                page = [n for n in listed if n.offset > offset]
                for notification in (n for n in page if n.offset <= end):
                    await self._handle(notification)  # the log's own offset stays where the others are
                    offset = notification.offset
                    await self.ledger.caught_up(her_id, offset)
                if not page or page[-1].offset > end:
                    break
            await self.ledger.caught_up(her_id, None)
            log.info("edi2.caught_up", her_id=her_id, from_offset=start, to_offset=end)

    # -- v2 -----------------------------------------------------------------------------------------------

    async def _poll_v2(self, her_ids: tuple[str, ...]) -> None:
        for message_id, receiver_her in await self.msh.unread(her_ids):
            if message_id in self._skipped:
                continue
            try:
                await self._take(message_id, receiver_her)
                self._failures.pop(("v2", message_id), None)
            except Exception as exc:
                if not self._gives_up(("v2", message_id), exc):
                    raise
                self._skipped[message_id] = None
                if len(self._skipped) > _MAX_SKIPPED:
                    del self._skipped[next(iter(self._skipped))]
                log.error(
                    "edi2.notification_skipped",
                    code="edi2.notification_skipped",
                    nhn_message_id=message_id,
                    cause=_cause(exc),
                )
        await self._poll_statuses()

    async def _poll_statuses(self) -> None:
        """The status of up to :data:`_STATUS_PER_POLL` of the messages awaiting an outcome, in turn."""
        pending = await self.ledger.pending()
        if not pending:
            return
        start = self._status_cursor % len(pending)
        turn = (pending[start:] + pending[:start])[:_STATUS_PER_POLL]
        self._status_cursor = start + len(turn)
        done: set[str] = set()
        try:
            for nhn_id in turn:
                try:
                    if await self._settle(nhn_id):
                        done.add(nhn_id)
                except (PermanentDeliveryError, ValueError, KeyError, TypeError) as exc:
                    # NHN no longer knows it, or says of it what cannot be read: its AppRec still comes as a message
                    log.warning("edi2.status_unavailable", code="edi2.status_unavailable", nhn_message_id=nhn_id,
                                cause=_cause(exc))  # fmt: skip
                    done.add(nhn_id)
        finally:
            if done:
                await self.ledger.drop_pending(done)

    # -- one message ----------------------------------------------------------------------------------------

    async def _take(self, message_id: str, receiver_her: str) -> None:
        meta = await self.msh.message(message_id)
        body = await self.msh.business_document(message_id)
        sender = str(meta.get("senderHerId", ""))
        msg_type = str(meta.get("businessDocumentMsgType") or meta.get("messageTypeIdentificator") or "")
        is_apprec = msg_type.upper() == "APPREC" or meta.get("isAppRec") is True  # v3 / v2 metadata
        packet = Packet(
            body=body,
            message_id=message_id,
            from_her=sender,
            to_her=receiver_her,
            content_type="application/xml",
            subject=msg_type,
        )
        msg_id = str(meta.get("businessDocumentId") or "")
        if msg_id and len(msg_id) <= _MAX_MSG_ID:
            await self.ledger.received(msg_id, message_id, sender=sender, receiver=receiver_her)
        result = await self.handler(packet)
        if result.retry_later:  # our side cannot take it now: NHN keeps it (not downloaded), we come back to it
            raise _NotTakenNow(f"The gateway cannot take NHN message {message_id} now: {result.message}",
                               cause=result.event)  # fmt: skip
        if not result.accepted and not is_apprec:
            await self._reject(message_id, receiver_her, result)
        await self.msh.downloaded(message_id, receiver_her)  # stored - or refused for good, never to be taken again
        log.info("edi2.received", nhn_message_id=message_id, receiver=receiver_her, accepted=result.accepted)

    async def _reject(self, message_id: str, receiver_her: str, result: InboundResult) -> None:
        """A message the gateway refused for good is answered through NHN, which builds the AppRec towards
        the sender: status 2 with the KITH code (X99 when the refusal has none) and the refusal's public
        text. NHN refusing the answer (it may have one already) leaves the refusal record to tell."""
        errors = [(result.code or "X99", result.message or "The message was refused.")]
        try:
            await self.msh.apprec(message_id, sender_her=receiver_her, status="2", errors=errors)
        except PermanentDeliveryError as exc:
            log.warning("edi2.rejection_not_posted", code="edi2.rejection_not_posted", nhn_message_id=message_id,
                        cause=exc.event)  # fmt: skip
            return
        log.info("edi2.apprec_posted", nhn_message_id=message_id, status="2", receiver=receiver_her, refused=True)

    async def _settle(self, message_id: str, description: str = "") -> bool:
        """What NHN says of a message we sent: a transport rejection or abandonment (with the notification's
        description, when one came), or its AppRec. True once nothing more is to come (its record is then
        forgotten)."""
        sent = await self.ledger.sent_record(message_id)
        reports = self.context.reports
        if sent is None or reports is None:
            return sent is None
        done = False
        for status in await self.msh.status(message_id):
            if status.receiver_her != sent.receiver:
                continue
            failed = {"Rejected": reports.transport_refused, "Abandoned": reports.transport_abandoned}
            if status.transport_state in failed:
                why = "rejected by the receiver's system" if status.transport_state == "Rejected" else (
                    "abandoned: NHN's resends to the receiver got no receipt")  # fmt: skip
                reason = f"NHN: {why}" + (f" ({description[:_MAX_REASON]})" if description else "")
                await failed[status.transport_state](sent.reference, sent.receiver, reason)
                done = True
            if status.apprec_status is not None:
                await reports.receipt(sent.reference, sent.receiver, status.apprec_status, status.apprec_errors)
                done = True
        if done:
            await self.ledger.settled(message_id)
        return done

    # -- giving up ------------------------------------------------------------------------------------------

    def _gives_up(self, key: Hashable, exc: Exception) -> bool:
        """Whether to skip what ``key`` names after ``exc``: never while NHN, the network or the store is
        down (or our credentials are refused); otherwise - NHN refusing it, an answer that cannot be read, a
        bug - once it has failed :data:`_TRIES` times over at least ``skip_after_s``."""
        if isinstance(exc, GatewayError) and not isinstance(exc, PermanentDeliveryError):
            return False
        now = time.monotonic()
        tries, first = self._failures.get(key, (0, now))
        tries += 1
        if tries >= _TRIES and now - first >= self.skip_after_s:
            self._failures.pop(key, None)
            return True
        if len(self._failures) > 10000:  # a flood of failing notifications: start counting afresh
            self._failures.clear()
        self._failures[key] = (tries, first)
        return False


def _cause(exc: Exception) -> str:
    if isinstance(exc, _NotTakenNow) and exc.cause:
        return exc.cause
    return exc.event if isinstance(exc, GatewayError) else type(exc).__name__

