"""One AMQP 1.0 connection to the Tjenestebuss, run by a qpid-proton ``Container`` on a thread of its own
and bridged to asyncio: proton objects are touched only on that thread (work is handed to it through an
``EventInjector``), results come back to the event loop with ``call_soon_threadsafe``.

- ``send`` resolves when the broker has settled the message: ``accepted`` is the transport's whole
  acknowledgement (HITS 1216 §2.1.1); ``rejected`` is for good, anything else (released, a lost connection,
  a link the broker closed) is worth another try.
- ``consume`` keeps a receiver link on an address across reconnects. Each receiver's messages are handed
  to its callback one at a time, in the order the broker gave them, with link credit given back only as
  each is settled - so no more than ``credit`` messages are ever held unsettled.
- A lost connection fails what was in flight (a settled-by-nobody send is retried by the delivery worker;
  unsettled received messages go back to the queue by themselves) and is reopened with a backoff of up to
  ``reconnect_max_s``. Settling a message of a connection that has gone is a no-op: the broker gives the
  message again and the gateway's duplicate check answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Delivery, Message
from proton._handlers import recv_msg  # proton's own decoding of a delivery (not re-exported)
from proton.handlers import IncomingMessageHandler, MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from gateway.errors import PermanentDeliveryError, TransportError
from gateway.log import get_logger

__all__ = ["Bus", "Incoming"]

log = get_logger(__name__)

OnMessage = Callable[["Incoming"], Awaitable[None]]

#: how long a closing bus waits for the broker to close the connection
_CLOSE_WAIT_S = 5.0
#: how long a receiver the broker closed (its queue missing, say) waits before it is attached again
_REATTACH_S = 30.0


@dataclass(eq=False)
class Incoming:
    """A received message, held unsettled until its callback settles it (once)."""

    message: Message
    address: str
    _bus: Bus
    _delivery: Any
    _generation: int
    settled: bool = field(default=False)

    def accept(self) -> None:
        self._settle("accept")

    def reject(self) -> None:
        """Dead-letter it: the broker's ``rejected`` outcome (RabbitMQ moves it to the queue's DLX)."""
        self._settle("reject")

    def release(self) -> None:
        """Give it back (``released``): the broker delivers it again, counting it against a quorum queue's
        delivery limit, and dead-letters it after the last one. (RabbitMQ 3.x's AMQP 1.0 plugin does not take
        ``modified``: it ends the session.)"""
        self._settle("release")

    def _settle(self, how: str) -> None:
        if not self.settled:
            self.settled = True
            self._bus._call(lambda: self._bus._handler.settle_delivery(self._delivery, how, self._generation))


class Bus:
    def __init__(
        self,
        url: str,
        *,
        virtual_host: str | None = None,
        credit: int = 10,
        reconnect_max_s: float = 30.0,
        name: str = "amqp",
    ) -> None:
        self.url = url
        self.virtual_host = virtual_host
        self.credit = max(1, credit)
        self.reconnect_max_s = reconnect_max_s
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._injector = EventInjector()
        self._handler = _Handler(self)
        self._thread: threading.Thread | None = None
        self._connected = asyncio.Event()
        self._consumers: dict[str, asyncio.Queue[Incoming | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._dead = False  # the proton thread has ended: nothing more is handed to it
        #: how many times the connection was lost (tests and the operator's view)
        self.disconnects = 0

    # -- life -----------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the proton thread and connect (in the background: a broker that is away now is tried again)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        container = Container(self._handler)
        container.selectable(self._injector)
        self._thread = threading.Thread(target=self._run, args=(container,), name=f"{self.name}-proton", daemon=True)
        self._thread.start()

    def _run(self, container: Container) -> None:
        """The proton thread. Nothing a peer sends may end it (the handler guards each step); should it end
        anyway, what waits fails and the bus says it is down, rather than hanging with a dead loop."""
        try:
            container.run()
        except BaseException:
            log.exception("amqp.thread_failed", bus=self.name)
        finally:
            self._dead = True
            self._to_loop(self._connected.clear)
            for outcome, _ in list(self._handler.pending.values()):
                self._to_loop(_fail, outcome, TransportError("The AMQP connection's thread has stopped."))
            self._handler.pending.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    async def close(self) -> None:
        for q in self._consumers.values():
            q.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._thread is not None:
            self._call(self._handler.shut)
            if not self._dead:
                self._injector.close()
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None
        self._connected.clear()

    # -- what the transport calls ---------------------------------------------------------------------

    def consume(self, address: str, on_message: OnMessage) -> None:
        """Receive from ``address`` for as long as the bus is open, one message at a time."""
        inbox: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self._consumers[address] = inbox
        self._tasks.append(asyncio.create_task(self._serve(inbox, on_message), name=f"{self.name}:{address}"))
        self._call(lambda: self._handler.add_receiver(address))

    async def send(
        self, address: str, message: Message, *, wait_connected_s: float = 5.0, timeout_s: float = 30.0
    ) -> None:
        """Put ``message`` on ``address``; returns once the broker has accepted it, raises
        :class:`TransportError` when it did not within ``timeout_s`` (a broker withholding credit in a memory
        or disk alarm, say)."""
        if self._dead or self._thread is None:
            raise TransportError("The AMQP connection is closed.")
        if not await self.wait_connected(wait_connected_s):
            raise TransportError(f"The AMQP broker is not reachable ({self._handler.last_error or 'connecting'}).")
        assert self._loop is not None
        outcome: asyncio.Future[None] = self._loop.create_future()
        tag = uuid.uuid4().hex
        self._call(lambda: self._handler.send(address, message, tag, outcome))
        try:
            await asyncio.wait_for(asyncio.shield(outcome), timeout_s)
        except TimeoutError:
            raise TransportError(f"The broker did not settle the message on {address} in {timeout_s:g} s.") from None
        finally:
            if not outcome.done():  # cancelled (the worker's send timeout): forget it
                self._call(lambda: self._handler.forget(tag))

    # -- the bridge -----------------------------------------------------------------------------------

    def _call(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the proton thread (nothing, once it has ended: its pipe would fill and block)."""
        if self._dead:
            return
        self._work.put(work)
        self._injector.trigger(ApplicationEvent("gateway_work"))

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(fn, *args)

    def _lost(self) -> None:
        self.disconnects += 1

    def _delivered(self, incoming: Incoming) -> None:
        inbox = self._consumers.get(incoming.address)
        if inbox is not None:
            inbox.put_nowait(incoming)

    async def _serve(self, inbox: asyncio.Queue[Incoming | None], on_message: OnMessage) -> None:
        while (incoming := await inbox.get()) is not None:
            try:
                await on_message(incoming)
            except Exception:  # a bug in the callback: the message goes back (and, in the end, to _dl)
                log.exception("amqp.callback_failed", address=incoming.address)
                incoming.release()


def _fail(outcome: asyncio.Future[None], error: Exception) -> None:
    if not outcome.done():
        outcome.set_exception(error)


def _done(outcome: asyncio.Future[None]) -> None:
    if not outcome.done():
        outcome.set_result(None)


class _Timer:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def on_timer_task(self, event: Any) -> None:
        try:
            self.fn()
        except Exception:  # a step that failed must not end the connection's thread
            log.exception("amqp.bridge_failed")


class _Handler(MessagingHandler):
    """Everything here runs on the proton thread."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(prefetch=0, auto_accept=False, auto_settle=True)
        # received messages are decoded here (on_delivery), where one that will not decode is refused:
        # proton's own decoding raises out of the loop and ends the thread
        self.handlers = [h for h in list(self.handlers) if not isinstance(h, IncomingMessageHandler)]  # type: ignore[arg-type]
        self.bus = bus
        self.container: Any = None
        self.connection: Any = None
        self.generation = 0
        self.backoff_s = 0.5
        self.closing = False
        self.open = False  # the connection is open (this thread's own view)
        self.last_error = ""
        self.addresses: list[str] = []
        self.receivers: dict[str, Any] = {}
        self.senders: dict[str, Any] = {}
        self.pending: dict[str, tuple[asyncio.Future[None], str]] = {}

    # -- connection -----------------------------------------------------------------------------------

    def on_start(self, event: Any) -> None:
        self.container = event.container
        self.connect()

    def connect(self) -> None:
        if self.closing:
            return
        more = {"virtual_host": self.bus.virtual_host} if self.bus.virtual_host else {}
        try:
            self.connection = self.container.connect(self.bus.url, reconnect=False, heartbeat=30, **more)
        except Exception as exc:  # an address that does not resolve, say: tried again, like a lost connection
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("amqp.disconnected", bus=self.bus.name, error=self.last_error, retry_in_s=self.backoff_s)
            self.container.schedule(self.backoff_s, _Timer(self.connect))
            self.backoff_s = min(self.backoff_s * 2, self.bus.reconnect_max_s)

    def on_connection_opened(self, event: Any) -> None:
        self.open = True
        self.generation += 1
        self.backoff_s = 0.5
        self.last_error = ""
        log.info("amqp.connected", bus=self.bus.name)
        for address in self.addresses:
            self.open_receiver(address)
        self.bus._to_loop(self.bus._connected.set)

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        self.last_error = f"{condition.name}: {condition.description}" if condition else "transport error"

    def on_connection_error(self, event: Any) -> None:
        """The broker closed the connection with an error: proton closes our end too, after which it tells
        of no disconnect - so it is taken as lost here (and tried again)."""
        condition = event.connection.remote_condition
        self.last_error = f"{condition.name}: {condition.description}" if condition else "closed by the broker"
        self.lost(event)

    def lost(self, event: Any) -> None:
        # proton tells of one drop more than once: only the first, of the current connection, counts
        # (proton wraps anew on each event: compare with ==, never `is`)
        if self.connection is None or event.connection != self.connection:
            return
        self.connection = None
        self.open = False
        self.bus._to_loop(self.bus._connected.clear)
        self.bus._to_loop(self.bus._lost)
        for outcome, _ in self.pending.values():
            self.bus._to_loop(_fail, outcome, TransportError(f"The AMQP connection was lost ({self.last_error})."))
        self.pending.clear()
        self.senders.clear()
        self.receivers.clear()
        if self.closing:
            return
        log.warning("amqp.disconnected", bus=self.bus.name, error=self.last_error, retry_in_s=self.backoff_s)
        self.container.schedule(self.backoff_s, _Timer(self.connect))
        self.backoff_s = min(self.backoff_s * 2, self.bus.reconnect_max_s)

    def shut(self) -> None:
        """Close the connection and wait for the broker's close (or :data:`_CLOSE_WAIT_S`) before the loop
        stops: a socket left open would keep the unsettled messages checked out to a consumer that is gone,
        until the broker's heartbeat gives up on it, instead of back on their queues at once."""
        self.closing = True
        if self.connection is not None and self.connection.state & self.connection.REMOTE_ACTIVE:
            self.connection.close()
            self.container.schedule(_CLOSE_WAIT_S, _Timer(self.container.stop))
        else:
            self.container.stop()

    def on_connection_closed(self, event: Any) -> None:
        if self.closing:
            self.container.stop()
        else:
            self.lost(event)

    def on_disconnected(self, event: Any) -> None:
        if self.closing:
            self.container.stop()
            return
        self.lost(event)

    def on_gateway_work(self, event: Any) -> None:
        while True:
            try:
                work = self.bus._work.get_nowait()
            except queue.Empty:
                return
            try:
                work()
            except Exception:  # one failed step (a settle on a link gone, say) must not end the thread
                log.exception("amqp.bridge_failed", bus=self.bus.name)

    # -- receiving ------------------------------------------------------------------------------------

    def add_receiver(self, address: str) -> None:
        self.addresses.append(address)
        if self.open:
            self.open_receiver(address)

    def session(self, address: str, role: str) -> Any:
        """A session of its own for each link: RabbitMQ answers a missing queue or exchange by ending the
        session, which must not take the other queues' links with it."""
        session = self.connection.session()
        session.gateway_link = (role, address)
        session.open()
        return session

    def open_receiver(self, address: str) -> None:
        session = self.session(address, "receiver")
        receiver = self.container.create_receiver(session, address, name=f"{address}:{uuid.uuid4().hex[:8]}")
        receiver.flow(self.bus.credit)
        self.receivers[address] = receiver

    def on_delivery(self, event: Any) -> None:
        """A received message, decoded here: one that will not decode (a property that is not UTF-8, a map
        proton cannot read) is rejected - dead-lettered to ``_dl`` - and its credit given back."""
        delivery = event.delivery
        link = delivery.link
        if not link.is_receiver:
            return  # the sending side's outcomes: OutgoingMessageHandler
        if delivery.aborted:
            delivery.settle()
            link.flow(1)
            return
        if not delivery.readable or delivery.partial:
            return
        address = link.source.address
        try:
            message = recv_msg(delivery)
            for name in ("id", "subject", "properties", "body", "address", "reply_to", "correlation_id"):
                getattr(message, name)  # everything read now, on this thread: nothing raises later
        except Exception as exc:
            log.error("amqp.undecodable", bus=self.bus.name, address=address, error=type(exc).__name__)
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            link.flow(1)
            return
        self.bus._to_loop(self.bus._delivered, Incoming(message, address, self.bus, delivery, self.generation))

    def settle_delivery(self, delivery: Any, how: str, generation: int) -> None:
        if generation != self.generation or delivery.settled:
            return  # that connection is gone: the broker gives the message again
        if how == "accept":
            delivery.update(Delivery.ACCEPTED)
        elif how == "reject":
            delivery.update(Delivery.REJECTED)
        else:
            delivery.update(Delivery.RELEASED)
        delivery.settle()
        link = delivery.link
        if link.state & link.LOCAL_ACTIVE:
            link.flow(1)

    # -- sending --------------------------------------------------------------------------------------

    def send(self, address: str, message: Message, tag: str, outcome: asyncio.Future[None]) -> None:
        if not self.open:
            self.bus._to_loop(_fail, outcome, TransportError("The AMQP connection was lost before the send."))
            return
        sender = self.senders.get(address)
        if sender is None:
            session = self.session(address, "sender")
            sender = self.container.create_sender(session, address, name=f"{address}:{uuid.uuid4().hex[:8]}")
            self.senders[address] = sender
        self.pending[tag] = (outcome, address)
        sender.send(message, tag=tag)

    def forget(self, tag: str) -> None:
        self.pending.pop(tag, None)

    def _outcome(self, event: Any) -> tuple[asyncio.Future[None], str] | None:
        tag = event.delivery.tag
        return self.pending.pop(tag.decode() if isinstance(tag, bytes) else tag, None)

    def on_accepted(self, event: Any) -> None:
        if (found := self._outcome(event)) is not None:
            self.bus._to_loop(_done, found[0])

    def on_rejected(self, event: Any) -> None:
        if (found := self._outcome(event)) is not None:
            condition = event.delivery.remote.condition
            said = f"{condition.name}: {condition.description}" if condition else "rejected"
            self.bus._to_loop(
                _fail, found[0], PermanentDeliveryError(f"The broker refused the message on {found[1]} ({said}).")
            )

    def on_released(self, event: Any) -> None:  # released, or modified: the broker did not take it now
        if (found := self._outcome(event)) is not None:
            self.bus._to_loop(
                _fail, found[0], TransportError(f"The broker did not take the message on {found[1]} now.")
            )

    # -- links the broker closes ----------------------------------------------------------------------

    def on_link_error(self, event: Any) -> None:
        link = event.link
        address = link.target.address if link.is_sender else link.source.address
        self.link_lost("sender" if link.is_sender else "receiver", address, link.remote_condition)

    def on_session_error(self, event: Any) -> None:
        found = getattr(event.session, "gateway_link", None)
        if found is not None:
            self.link_lost(found[0], found[1], event.session.remote_condition)

    def link_lost(self, role: str, address: str, condition: Any) -> None:
        """A link the broker refused or closed (a queue or an exchange that does not exist, say): fail what
        waits on it and, for a receiver, attach it again after a while - the connection and the other links
        stay."""
        said = f"{condition.name}: {condition.description}" if condition else "closed"
        if role == "sender":
            self.senders.pop(address, None)
            for tag, (outcome, at) in list(self.pending.items()):
                if at == address:
                    del self.pending[tag]
                    error = TransportError(f"The broker closed the link to {address} ({said}).")
                    self.bus._to_loop(_fail, outcome, error)
            log.warning("amqp.link_closed", bus=self.bus.name, address=address, error=said)
            return
        if self.receivers.pop(address, None) is not None:
            log.error("amqp.receiver_closed", bus=self.bus.name, address=address, error=said, retry_in_s=_REATTACH_S)
            generation = self.generation
            self.container.schedule(_REATTACH_S, _Timer(lambda: self._reopen(address, generation)))

    def _reopen(self, address: str, generation: int) -> None:
        # the same connection, still open (a new one opens every receiver itself)
        if self.open and generation == self.generation and not self.closing and address not in self.receivers:
            self.open_receiver(address)
