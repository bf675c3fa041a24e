"""The ``local`` channel: a message from one party this gateway serves to another is handed straight to
the gateway's own inbound pipeline - a transport like the others, so the delivery worker has no special
case for it. It carries the XML itself (the hand-over never leaves the process)."""

from __future__ import annotations

from gateway.errors import PermanentDeliveryError, TransportError
from gateway.transport import InboundHandler, Packet, Transport, TransportContext

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    name = "local"
    carries = "plain"

    def __init__(self, receive: InboundHandler, context: TransportContext | None = None) -> None:
        super().__init__(context)
        self._receive = receive

    async def send(self, packet: Packet) -> None:
        """Hand the packet over; the receiving side's refusal becomes this delivery's, as a peer's would."""
        result = await self._receive(packet)
        if result.retry_later:
            raise TransportError(f"the local receiver asks to try again later: {result.message}")
        if not result.accepted:
            raise PermanentDeliveryError(result.message, apprec_code=result.code, condition=result.condition)
