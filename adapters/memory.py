"""The ``memory`` adapter: packets handed between gateways in one process. For unit tests only.

Gateways that share a :class:`MemoryNetwork` (passed in the adapter options as ``network``) reach each
other by address (``memory://<name>``); each gateway attaches its inbound handler under its own
``address``. The network records what it carried and can be taken down to test outages.
"""

from __future__ import annotations

from gateway.errors import PermanentDeliveryError, TransportError
from gateway.transport import InboundHandler, InboundResult, Packet, Transport, TransportContext

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """A switchboard of inbound handlers by address."""

    def __init__(self) -> None:
        self._handlers: dict[str, InboundHandler] = {}
        self.carried: list[Packet] = []
        self.down: set[str] = set()

    def attach(self, address: str, handler: InboundHandler) -> None:
        self._handlers[address] = handler

    def detach(self, address: str) -> None:
        self._handlers.pop(address, None)

    async def deliver(self, packet: Packet) -> InboundResult:
        handler = self._handlers.get(packet.destination)
        if handler is None or packet.destination in self.down:
            raise TransportError(f"Nobody is listening at {packet.destination}.")
        self.carried.append(packet)
        return await handler(packet)


class MemoryTransport(Transport):
    name = "memory"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        network = self.context.options.get("network")
        self.network: MemoryNetwork = network if isinstance(network, MemoryNetwork) else MemoryNetwork()
        self.address = str(self.context.options.get("address", ""))

    async def start(self, handler: InboundHandler) -> None:
        if self.address:
            self.network.attach(self.address, handler)

    async def send(self, packet: Packet) -> None:
        result = await self.network.deliver(packet)
        if result.accepted:
            return
        if result.retry_later:
            raise TransportError(f"{packet.destination} asks to try again later: {result.message}")
        raise PermanentDeliveryError(
            f"{packet.destination} refused the packet: {result.message}",
            apprec_code=result.code,
            condition=result.condition,
        )

    async def aclose(self) -> None:
        if self.address:
            self.network.detach(self.address)
