"""A party's dead letters on the bus (``<her>_dl``): see them, and put them back on the queue they died on.

A message lands in ``<her>_dl`` when a receiver rejected it (no sender to tell) or gave it back more often
than the broker's delivery limit (a failure nobody foresaw, or one that lasted). AMQP 1.0 cannot browse a
queue, so seeing them takes each one on a connection of its own and closes it with the message unsettled
(so it goes back where it was); re-queueing sends a fresh copy - its HITS 1216 fields and body, nothing the
broker annotated - to the queue it came from, and takes the dead letter off only once the broker has
accepted the copy. Nothing here reads or prints a body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from proton import Message

from adapters.amqp.bus import Bus, Incoming
from adapters.amqp.fields import canonical_id, content_type_of, printable, queue_name
from adapters.amqp.settings import AmqpSettings
from gateway.errors import TransportError

__all__ = ["DeadLetter", "dead_letters", "requeue"]

#: how long to wait for one more dead letter before taking the queue as read
IDLE_S = 2.0


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    queue: str  # the queue it died on (its ``to``), where re-queueing puts it
    from_her: str
    to_her: str
    subject: str
    application_timestamp: str
    size: int


async def dead_letters(settings: AmqpSettings, her: str, *, limit: int = 1000) -> list[DeadLetter]:
    """The dead letters of ``her`` (at most ``limit``); each goes back to ``<her>_dl`` as it was."""
    async with _reading(settings, her, limit) as (_, taken):
        return [_describe(incoming.message, her) for incoming in taken]


async def requeue(
    settings: AmqpSettings, her: str, message_ids: Collection[str] | None = None, *, limit: int = 1000
) -> list[DeadLetter]:
    """Put ``her``'s dead letters (those of ``message_ids``, or all) back on the queues they died on; the
    ones moved. A copy the broker does not accept leaves its dead letter where it was (and raises)."""
    wanted = {canonical_id(m) for m in message_ids} if message_ids is not None else None
    moved: list[DeadLetter] = []
    async with _reading(settings, her, limit) as (bus, taken):
        for incoming in taken:
            letter = _describe(incoming.message, her)
            if wanted is not None and canonical_id(letter.message_id) not in wanted:
                continue
            await bus.send(settings.addresses.sender(letter.queue), _copy(incoming.message))
            incoming.accept()
            moved.append(letter)
    return moved


@contextlib.asynccontextmanager
async def _reading(settings: AmqpSettings, her: str, limit: int) -> AsyncIterator[tuple[Bus, list[Incoming]]]:
    """Every message on ``<her>_dl`` (up to ``limit``), held unsettled on a connection of its own: the queue
    is taken as read once nothing more comes for :data:`IDLE_S`. What is not settled when the connection
    closes goes back to ``<her>_dl`` by itself."""
    bus = settings.bus(credit=limit, name="dead-letters")
    await bus.open()
    try:
        if not await bus.wait_connected(30.0):
            raise TransportError(
                f"The AMQP broker is not reachable ({settings.addresses.namespace or 'no namespace'})."
            )
        arrived: asyncio.Queue[Incoming] = asyncio.Queue()

        async def hold(incoming: Incoming) -> None:
            await arrived.put(incoming)

        bus.consume(settings.addresses.receiver(f"{her}_dl"), hold)
        taken: list[Incoming] = []
        while len(taken) < limit:
            try:
                taken.append(await asyncio.wait_for(arrived.get(), IDLE_S))
            except TimeoutError:
                break
        yield bus, taken
    finally:
        await bus.close()


def _describe(message: Message, her: str) -> DeadLetter:
    """What an operator sees of a dead letter: its fields, printable and bounded (a peer wrote them), and the
    queue it goes back to - ``<her>_async`` or ``<her>_sync`` as its ``to`` says, never another."""
    props: dict[Any, Any] = message.properties if isinstance(message.properties, dict) else {}
    queue = f"{her}_async"
    with contextlib.suppress(ValueError):
        if queue_name(str(message.address or "")) == f"{her}_sync":
            queue = f"{her}_sync"
    body = message.body
    return DeadLetter(
        message_id=printable(message.id),
        queue=queue,
        from_her=printable(props.get("fromHerId"), 12),
        to_her=printable(props.get("toHerId"), 12),
        subject=printable(message.subject),
        application_timestamp=printable(props.get("applicationTimeStamp"), 40),
        size=len(body) if isinstance(body, bytes | memoryview) else 0,
    )


def _copy(message: Message) -> Message:
    """The message anew: its id, HITS 1216 properties and body, none of the broker's annotations (copying
    those broke Helsenorge.Messaging's own re-queue, #846 and #811)."""
    body = message.body
    copy = Message(
        body=bytes(body) if isinstance(body, memoryview) else body,
        inferred=True,
        id=message.id,
        address=message.address,
        subject=message.subject,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        durable=True,
        properties=dict(message.properties or {}),
    )
    content_type = content_type_of(message)
    if content_type:
        copy.content_type = content_type
    return copy
