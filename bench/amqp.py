"""The amqp adapter through a real RabbitMQ (Debian's, started here on loopback as the tests do): messages/s
one way with CMS, and send -> settle latency (median, p99).

    .venv/bin/python bench/amqp.py [--messages 2000]

Two gateways in one process and one event loop, as tests/amqp/amqp_region.py: the hub and a St. Olavs
gateway, each with its own SQLite store (synchronous=FULL) and the same dev PKI, both on one namespace of
a broker set up like NHN's bus (quorum queues, delivery limit 10). Traffic: bench/traffic.py's
Innleggelsesrapport without its copy receiver, from the 13 municipalities in turn to 7200101 (13 ordered
lanes, route_concurrency 4: the defaults), each signed and encrypted by the hub.

1. throughput: n messages accepted while the hub's worker is stopped, then delivered; timed until St.
   Olavs has received, decrypted, verified and stored the last (its worker does not run, so no AppRecs
   travel back meanwhile);
2. send -> settle: how long the broker takes to accept one message (the adapter's ``bus.send``, after the
   CMS), measured during 1 (under load) and for n messages one at a time.
Synchronous request/reply is not built yet, so there is no round trip to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.edi2 import BENCH, STOLAV, pct, to_stolav  # noqa: E402
from gateway.config import PROJECT_ROOT, Settings, load_settings  # noqa: E402
from gateway.log import configure  # noqa: E402
from gateway.registry import load_register  # noqa: E402
from gateway.replay import mirror_regions  # noqa: E402
from gateway.security.devpki import init_dev_pki  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from gateway.testing.rabbit import Broker  # noqa: E402

NAMESPACE = "NHNTestServiceBus"
WITHIN_S = 300.0  # a bound for a stuck run, never a timing to meet


def settings_in(base: Settings, data_dir: Path, pki: Path) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    security = dataclasses.replace(
        base.security,
        protection="cms",
        dev_pki=False,
        trust_anchors=(pki / "ca.crt",),
        crls=(str(pki / "ca.crl"),),
    )
    return dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, data_dir=data_dir),
        security=security,
        routing=dataclasses.replace(base.routing, default_adapter=None),
        adapters={},
    )


class SendTimes:
    """Wraps a bus's ``send``: how long each took (the broker's settle after the CMS)."""

    def __init__(self, bus: Any) -> None:
        self.times: list[float] = []
        self._send = bus.send
        bus.send = self

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        await self._send(*args, **kwargs)
        self.times.append(time.perf_counter() - start)


class Stored:
    """Wraps a gateway's inbound ``receive``: how many packets it has taken (stored) so far."""

    def __init__(self, gateway: Gateway) -> None:
        self.count = 0
        self._receive = gateway.inbound.receive
        gateway.inbound.receive = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._receive(*args, **kwargs)
        if result.accepted:
            self.count += 1
        return result

    async def reach(self, n: int) -> None:
        deadline = time.monotonic() + WITHIN_S
        while self.count < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"St. Olavs had stored {self.count} of {n} messages in {WITHIN_S:.0f} s")
            await asyncio.sleep(0.005)


async def run(n: int, work: Path) -> None:
    with Broker(work / "rabbitmq") as broker:
        base = load_settings(PROJECT_ROOT / "config" / "gateway.toml")
        register = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
        broker.set_up_namespace(NAMESPACE, [p.her_id for p in register])
        init_dev_pki(settings_in(base, work, work / "pki"), register)
        pki = work / "pki"
        hub_reg, st_reg = mirror_regions(register, hub_endpoint="", stolav_endpoint="", adapter="amqp", pki=pki)
        options = {"amqp": {"url": broker.amqp_url, "namespace": NAMESPACE}}
        hub = Gateway(settings_in(base, work / "hub", pki), register=hub_reg, adapter_options=options)
        stolav = Gateway(settings_in(base, work / "stolav", pki), register=st_reg, adapter_options=options)
        async with hub, stolav:
            sends = SendTimes(hub.transports["amqp"].bus)  # type: ignore[attr-defined]
            stored = Stored(stolav)
            batch = [to_stolav(i)[0] for i in range(n)]
            for body in batch:
                await hub.submit(body, BENCH)
            started = time.perf_counter()
            hub.start_background()
            await stored.reach(n)
            elapsed = time.perf_counter() - started
            print(
                f"delivered: {n} messages from the hub to {STOLAV} through RabbitMQ with CMS in {elapsed:.1f} s = "
                f"{n / elapsed:.0f} messages/s (the worker started on {n} queued, 13 lanes; until St. Olavs had "
                "decrypted, verified and stored the last)"
            )
            loaded = list(sends.times)
            print(
                f"send -> settle under that load: median {statistics.median(loaded) * 1000:.1f} ms, "
                f"p99 {pct(loaded, 0.99) * 1000:.1f} ms (the broker accepting one message; {len(loaded)} sends)"
            )
            sends.times.clear()
            for i in range(n):
                await hub.submit(to_stolav(n + i)[0], BENCH)
                await stored.reach(n + i + 1)
            alone = list(sends.times)
            print(
                f"send -> settle one at a time: median {statistics.median(alone) * 1000:.1f} ms, "
                f"p99 {pct(alone, 0.99) * 1000:.1f} ms ({len(alone)} messages, each stored by St. Olavs before "
                "the next was submitted)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    configure(fmt="console", level="warning", stream=sys.stderr)
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-amqp-") as work:
        asyncio.run(run(args.messages, Path(work)))
    print(
        f"(whole run {time.perf_counter() - started:.0f} s with the broker and the dev PKI; "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )


if __name__ == "__main__":
    main()
