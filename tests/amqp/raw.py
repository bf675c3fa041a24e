"""A test's own hands on the broker: put a message on an address or take one off a queue, with proton's
blocking client on a thread - what a peer on the bus would see or send, without the gateway's adapter."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from proton import Message
from proton.utils import BlockingConnection

from adapters.amqp.fields import CMS_CONTENT_TYPE
from gateway.testing.rabbit import Broker


def peer_message(
    body: bytes, *, from_her: str, to_her: str, queue: str = "async", subject: str = "EPIKRISE", **fields: object
) -> Message:
    """A message as Helsenorge.Messaging puts it on ``<to_her>_<queue>``, with a reply-to of the same kind
    (``_syncreply`` for a synchronous request); ``fields`` set (or, given None, clear) any of its fields."""
    message = Message(
        body=body,
        inferred=True,
        id=str(uuid.uuid4()),
        address=f"{to_her}_{queue}",
        subject=subject,
        reply_to=f"{from_her}_{'syncreply' if queue == 'sync' else queue}",
        content_type=CMS_CONTENT_TYPE,
        durable=True,
        properties={
            "fromHerId": from_her,
            "toHerId": to_her,
            "applicationTimeStamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _connect(broker: Broker, vhost: str) -> BlockingConnection:
    return BlockingConnection(broker.amqp_url, timeout=60, virtual_host=f"vhost:{vhost}")


def _put(broker: Broker, vhost: str, address: str, message: Message) -> None:
    connection = _connect(broker, vhost)
    try:
        connection.create_sender(address).send(message)  # returns once the broker settled it
    finally:
        connection.close()


def _put_bytes(broker: Broker, vhost: str, address: str, encoded: bytes) -> None:
    """Bytes on the wire as a message's sections, however they decode (what a broken or hostile peer sends)."""
    connection = _connect(broker, vhost)
    try:
        sender = connection.create_sender(address)
        delivery = sender.link.delivery(b"raw")
        sender.link.send(encoded)
        sender.link.advance()
        connection.wait(lambda: bool(delivery.remote_state), timeout=60, msg="the broker's outcome")
    finally:
        connection.close()


def _take(broker: Broker, vhost: str, address: str, timeout_s: float) -> Message | None:
    connection = _connect(broker, vhost)
    try:
        receiver = connection.create_receiver(address, credit=1)
        try:
            message = receiver.receive(timeout=timeout_s)
        except Exception:  # proton's Timeout: nothing came
            return None
        receiver.accept()
        return message
    finally:
        connection.close()


async def put(broker: Broker, vhost: str, address: str, message: Message) -> None:
    await asyncio.to_thread(_put, broker, vhost, address, message)


async def put_bytes(broker: Broker, vhost: str, address: str, encoded: bytes) -> None:
    await asyncio.to_thread(_put_bytes, broker, vhost, address, encoded)


async def take(broker: Broker, vhost: str, queue: str, *, within_s: float = 60.0) -> Message:
    """The next message on ``queue`` (accepted); fails the test when none comes within the (generous) bound."""
    message = await asyncio.to_thread(_take, broker, vhost, f"/amq/queue/{queue}", within_s)
    assert message is not None, f"nothing arrived on {queue}"
    return message


async def nothing_on(broker: Broker, vhost: str, queue: str, *, for_s: float = 2.0) -> bool:
    """True when no message is (or arrives) on ``queue`` for a little while."""
    return await asyncio.to_thread(_take, broker, vhost, f"/amq/queue/{queue}", for_s) is None
