"""The amqp adapter through a real RabbitMQ (Debian's, started here on loopback as the tests do): messages/s
one way with CMS, send -> settle latency (median, p99), and synchronous request/reply round trips (median,
p99, requests/s).

    .venv/bin/python bench/amqp.py [--messages 2000] [--requests 200] [--callers 8]

Two gateways in one process and one event loop, as tests/amqp/amqp_region.py: the hub and a St. Olavs
gateway, each with its own SQLite store (synchronous=FULL) and the same dev PKI, both on one namespace of
a broker set up like NHN's bus (quorum queues, delivery limit 10). Traffic: bench/traffic.py's
Innleggelsesrapport without its copy receiver, from the 13 municipalities in turn to 7200101 (13 ordered
lanes, route_concurrency 4: the defaults), each signed and encrypted by the hub.

1. throughput: n messages accepted while the hub's worker is stopped, then delivered; timed until St.
   Olavs has received, decrypted, verified and stored the last (its worker does not run, so no AppRecs
   travel back meanwhile);
2. send -> settle: how long the broker takes to accept one message (the adapter's ``bus.send``, after the
   CMS), measured during 1 (under load) and for n messages one at a time;
3. request -> reply (HITS 1216 §2.2.2): the hub's EHR asks St. Olavs with ``Gateway.request`` (timeout
   15 s) and waits, as tests/amqp/test_amqp_sync.py does: the dialogue fixtures' Helsefaglig dialog
   (foresporsel, Hitra 7100201 -> 7200101, each with a new MsgId) is signed and encrypted by the hub, goes
   to 7200101_sync; St. Olavs decrypts, verifies and judges it, POSTs it to its EHR's ``sync_url`` (a small
   aiohttp EHR on loopback in this process, answering at once with the svar fixture under a new MsgId),
   judges, signs and encrypts the answer and sends it to 7100201_syncreply, where the hub decrypts,
   verifies and judges it before ``request`` returns. Timed from the call to its return: r requests one
   after another, then r requests shared by c concurrent callers (each asking again as soon as it has its
   reply); one request before, not counted, opens the links and the EHR's connection. Nothing is queued or
   stored for these. A refusal or a timeout ends the run.

``--messages 0`` skips 1 and 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.edi2 import BENCH, STOLAV, pct, to_stolav  # noqa: E402
from gateway.config import PROJECT_ROOT, Settings, load_settings  # noqa: E402
from gateway.errors import GatewayError  # noqa: E402
from gateway.log import configure  # noqa: E402
from gateway.registry import Register, load_register  # noqa: E402
from gateway.replay import mirror_regions  # noqa: E402
from gateway.security.devpki import init_dev_pki  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from gateway.testing.rabbit import Broker  # noqa: E402

NAMESPACE = "NHNTestServiceBus"
WITHIN_S = 300.0  # a bound for a stuck run, never a timing to meet
SYNC_TIMEOUT_S = 15.0  # the caller's wait (Helsenorge.Messaging's CallTimeout), never a timing to meet
DIALOGUE = PROJECT_ROOT / "fixtures" / "messages" / "dialogmelding-1.1"
_MSGID = re.compile(rb"<MsgId>[^<]+</MsgId>")


def at_stolav(body: bytes) -> bytes:
    """A dialogue fixture between Hitra and the GP with St. Olavs (7200000/7200101) in the GP's place, as
    tests/amqp/test_amqp_sync.py has them."""
    return body.replace(b"7102000", b"7200000").replace(b"7102001", b"7200101")


def fresh(body: bytes) -> bytes:
    """The message under a new MsgId."""
    return _MSGID.sub(f"<MsgId>{uuid.uuid4()}</MsgId>".encode(), body, count=1)


REQUEST = at_stolav((DIALOGUE / "helsefaglig-dialog-foresporsel.xml").read_bytes())  # Hitra -> St. Olavs
ANSWER = at_stolav((DIALOGUE / "helsefaglig-dialog-svar.xml").read_bytes())  # St. Olavs -> Hitra


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


async def one_way(hub: Gateway, stolav: Gateway, n: int) -> None:
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


@contextlib.asynccontextmanager
async def sync_ehr() -> AsyncIterator[tuple[list[int], str]]:
    """St. Olavs' EHR as its sync endpoint on loopback: answers every request at once with the svar fixture
    under a new MsgId; yields a one-item list counting the requests it got, and its URL."""
    asked = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        asked[0] += 1
        return web.Response(body=fresh(ANSWER), content_type="application/xml")

    app = web.Application()
    app.router.add_post("/sync", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield asked, f"http://127.0.0.1:{runner.addresses[0][1]}/sync"
    finally:
        await runner.cleanup()


async def round_trip(hub: Gateway) -> float:
    """One synchronous request from the hub's EHR to St. Olavs: seconds from the call to the verified reply."""
    request = fresh(REQUEST)
    started = time.perf_counter()
    try:
        reply = await hub.request(request, BENCH, timeout_s=SYNC_TIMEOUT_S)
    except GatewayError as exc:
        raise RuntimeError(f"a synchronous request to {STOLAV} failed ({exc.event}): {exc}") from exc
    elapsed = time.perf_counter() - started
    if (reply.from_her, reply.kind) != (STOLAV, "dialogmelding-1.1"):
        raise RuntimeError(f"the reply came from {reply.from_her} as {reply.kind}")
    return elapsed


async def round_trips(hub: Gateway, n: int, callers: int, asked: list[int]) -> None:
    first = await round_trip(hub)
    print(
        f"request -> reply, the first: {first * 1000:.1f} ms (opens the hub's link to {STOLAV}_sync and the "
        "EHR's connection; not counted below)"
    )
    before = asked[0]
    alone: list[float] = []
    started = time.perf_counter()
    for _ in range(n):
        alone.append(await round_trip(hub))
    elapsed = time.perf_counter() - started
    print(
        f"request -> reply one at a time: median {statistics.median(alone) * 1000:.1f} ms, "
        f"p99 {pct(alone, 0.99) * 1000:.1f} ms, {n / elapsed:.0f} requests/s ({n} requests in {elapsed:.1f} s; "
        "the hub's EHR to St. Olavs' EHR and back through RabbitMQ, CMS both ways, each reply verified and "
        "judged before the next request)"
    )
    left = n
    together: list[float] = []

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            together.append(await round_trip(hub))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(callers):
            group.create_task(caller())
    elapsed = time.perf_counter() - started
    print(
        f"request -> reply with {callers} concurrent callers: median {statistics.median(together) * 1000:.1f} ms, "
        f"p99 {pct(together, 0.99) * 1000:.1f} ms, {n / elapsed:.0f} requests/s ({n} requests in {elapsed:.1f} s)"
    )
    if asked[0] - before != 2 * n:
        raise RuntimeError(f"St. Olavs' EHR was asked {asked[0] - before} times for {2 * n} requests")


async def run(n: int, requests: int, callers: int, work: Path) -> None:
    with Broker(work / "rabbitmq") as broker:
        base = load_settings(PROJECT_ROOT / "config" / "gateway.toml")
        register = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
        broker.set_up_namespace(NAMESPACE, [p.her_id for p in register])
        init_dev_pki(settings_in(base, work, work / "pki"), register)
        pki = work / "pki"
        hub_reg, st_reg = mirror_regions(register, hub_endpoint="", stolav_endpoint="", adapter="amqp", pki=pki)
        options = {"amqp": {"url": broker.amqp_url, "namespace": NAMESPACE}}
        async with sync_ehr() as (asked, url):
            st_reg = Register(  # 7200101's EHR answers synchronous requests, as tests/amqp/amqp_region.py sets it
                [dataclasses.replace(p, sync_url=url) if p.her_id == STOLAV and p.local else p for p in st_reg],
                name=st_reg.name,
            )
            hub = Gateway(settings_in(base, work / "hub", pki), register=hub_reg, adapter_options=options)
            stolav = Gateway(settings_in(base, work / "stolav", pki), register=st_reg, adapter_options=options)
            async with hub, stolav:
                if n > 0:
                    await one_way(hub, stolav, n)
                if requests > 0:
                    await round_trips(hub, requests, callers, asked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000, help="for 1 and 2; 0 skips them")
    parser.add_argument("--requests", type=int, default=200, help="round trips, one at a time and then concurrent")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers sharing the second round")
    args = parser.parse_args()
    configure(fmt="console", level="warning", stream=sys.stderr)
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-amqp-") as work:
        asyncio.run(run(args.messages, args.requests, args.callers, Path(work)))
    print(
        f"(whole run {time.perf_counter() - started:.0f} s with the broker and the dev PKI; "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )


if __name__ == "__main__":
    main()
