"""The edi2 adapter against the local NHN: messages/s delivered to St. Olavs through NHN's Meldingstjener,
accept -> transport-acknowledged latency (median, p99), and the cost of one DPoP proof and of one HelseID
token request.

    .venv/bin/python bench/edi2.py [--messages 2000] [--api-version 3|2]

One process, one event loop, as tests/edi2/nhn_region.py: the fake HelseID and the NHN simulator
(config/sim-nhn.toml, ports chosen free) on loopback via aiohttp, and the hub as config/gateway.toml makes
it (St. Olavs are edi2 parties; SQLite with synchronous=FULL in a temporary data dir; protection "cms"
with the dev PKI - which these deliveries never use: edi2 carries the plain XML, NHN does the CMS). Every
call to NHN carries a HelseID token and a fresh DPoP proof (PS512, the default), checked by the simulator.

Traffic: bench/traffic.py's Innleggelsesrapport without its copy receiver, from the 13 municipalities in
turn to 7200101 (13 ordered lanes, route_concurrency 4: the defaults). The peer 7200101 acknowledges
at once (its scripted steps run as soon as NHN has taken the message; no AppRec), so the transport
acknowledgment is the moment NHN accepted the POST; its time is read from the simulator's notification
log (MessageDeliveryStateUpdated). The hub's receive side (SSE stream in v3, polling in v2) runs as in
production meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.helseid.client import HelseIdClient  # noqa: E402
from adapters.helseid.dpop import Algorithm, SigningKey, dpop_proof  # noqa: E402
from bench.traffic import MUNICIPALITIES, message  # noqa: E402
from gateway.cli.sim import build, load_sim_config  # noqa: E402
from gateway.config import Settings, load_settings  # noqa: E402
from gateway.log import configure  # noqa: E402
from gateway.pipeline.outbound import Client  # noqa: E402
from gateway.registry import Register, load_register  # noqa: E402
from gateway.security.devpki import DEV_HELSEID_KEY, ensure_dev_pki  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from gateway.testing.nhn.msh import Simulator  # noqa: E402
from gateway.testing.nhn.msh_state import MessageRecord  # noqa: E402
from gateway.testing.nhn.peers import PeerScript  # noqa: E402

STOLAV = "7200101"
SENDERS = frozenset(service for _org, service in MUNICIPALITIES)
_COPY = re.compile(rb"\s*<OtherReceiver>.*?</OtherReceiver>", re.S)
_MSGID = re.compile(rb"<MsgId>([^<]+)</MsgId>")
BENCH = Client("bench", None, True)
WITHIN_S = 120.0  # a bound for a stuck run, never a timing to meet


def to_stolav(n: int) -> tuple[bytes, str]:
    """Message number ``n`` to St. Olavs alone (the copy receiver taken out) and its MsgId."""
    body = _COPY.sub(b"", message(n), count=1)
    found = _MSGID.search(body)
    assert found is not None
    return body, found.group(1).decode()


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def medians_us(fns: Mapping[str, Callable[[], object]], iterations: int) -> dict[str, float]:
    """The median time of each function, in microseconds; called in turn, so each sees the same machine."""
    for fn in fns.values():  # warm-up: lazy imports, caches
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iterations):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e6 for name, values in times.items()}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round(p * (len(ordered) - 1))]


class Acks:
    """Reads the simulator's notification log: when NHN set each message (by MsgId) Acknowledged."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.cursor = 0

    async def wait(self, msg_ids: Collection[str]) -> dict[str, float]:
        """Wait until every one of ``msg_ids`` is acknowledged; their acknowledgment times (UNIX s)."""
        log, messages = self.sim.state.log, self.sim.state.messages
        found: dict[str, float] = {}
        deadline = time.monotonic() + WITHIN_S
        while len(found) < len(msg_ids):
            notes, self.cursor = log.read(SENDERS, self.cursor, 10_000)
            for note in notes:
                if note.type == "MessageDeliveryStateUpdated" and note.triggered_by == STOLAV:
                    record = messages[note.related_message_id]
                    if record.deliveries[STOLAV].state != "Acknowledged":
                        raise SystemExit(f"NHN did not acknowledge a message: {record.deliveries[STOLAV]}")
                    if record.info.msg_id is not None and record.info.msg_id in msg_ids:
                        found[record.info.msg_id] = note.created_at
            if len(found) < len(msg_ids):
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(found)} of {len(msg_ids)} acknowledged by NHN in {WITHIN_S:.0f} s")
                await log.wait(self.cursor, 1.0)
        return found


async def token_round_trips(helseid_url: str, key: SigningKey, iterations: int) -> tuple[list[float], str]:
    """How long each of ``iterations`` token requests took, and the last token."""
    async with aiohttp.ClientSession() as session:
        client = HelseIdClient(helseid_url, "sio-gateway", key, session=session)
        await client.access_token()  # discovery and the nonce: once per process
        times = []
        for _ in range(iterations):
            client.invalidate()
            start = time.perf_counter()
            await client.access_token()
            times.append(time.perf_counter() - start)
        return times, await client.access_token()


async def all_sent(hub: Gateway, n: int) -> None:
    """The hub has recorded every delivery as sent (NHN acknowledges before the hub has its answer)."""
    deadline = time.monotonic() + WITHIN_S
    while (counts := (await hub.store.queue_counts()).get(STOLAV, {})).get("sent", 0) < n:
        if time.monotonic() > deadline or counts.get("dead") or counts.get("retrying"):
            raise SystemExit(f"the hub's deliveries to {STOLAV} are not all sent: {counts}")
        await asyncio.sleep(0.01)


async def caught_up(hub: Gateway, sim: Simulator) -> float:
    """v3: wait until the hub has processed NHN's notification log up to its tail; when (UNIX s)."""
    tail = sim.state.log.tail
    deadline = time.monotonic() + WITHIN_S
    while int(await hub.store.get_meta("adapter:edi2:offset") or 0) < tail:
        if time.monotonic() > deadline:
            raise SystemExit("the hub did not catch up with NHN's notification log")
        await asyncio.sleep(0.02)
    return time.time()


async def run(n: int, api_version: str, work: Path) -> None:
    settings = load_settings(ROOT / "config" / "gateway.toml")
    settings = dataclasses.replace(settings, gateway=dataclasses.replace(settings.gateway, data_dir=work))
    register = load_register(settings.gateway.region)
    ensure_dev_pki(settings, register)  # as `gateway pki init`: it makes the HelseID client key too
    key_file = settings.in_data_dir(DEV_HELSEID_KEY)

    msh_sock, helseid_sock = bound_socket(), bound_socket()
    msh_url = f"http://127.0.0.1:{msh_sock.getsockname()[1]}"
    helseid_url = f"http://127.0.0.1:{helseid_sock.getsockname()[1]}"
    config = load_sim_config(ROOT / "config" / "sim-nhn.toml", client_key=key_file)
    assert config.helseid is not None
    peers = tuple(
        dataclasses.replace(p, sends=(), script=PeerScript(apprec=None) if p.her_id == STOLAV else p.script)
        for p in config.peers
    )
    config = dataclasses.replace(
        config, peers=peers, helseid=dataclasses.replace(config.helseid, port=helseid_sock.getsockname()[1])
    )
    sim, msh_app, helseid_app = build(config, tick=False)
    assert helseid_app is not None
    loop = asyncio.get_running_loop()
    accept = sim.network.accept

    def accept_now(record: MessageRecord, receiver: str) -> None:  # the peer's steps run once NHN has taken it
        accept(record, receiver)
        loop.call_soon(sim.network.run_due)

    sim.network.accept = accept_now  # type: ignore[method-assign, assignment]
    runners = []
    for app, sock in ((msh_app, msh_sock), (helseid_app, helseid_sock)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
    try:
        await measure(settings, register, sim, n, api_version, (msh_url, helseid_url))
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def measure(
    settings: Settings, register: Register, sim: Simulator, n: int, api_version: str, urls: tuple[str, str]
) -> None:
    msh_url, helseid_url = urls
    key_file = settings.in_data_dir(DEV_HELSEID_KEY)
    options = {**settings.adapters["edi2"], "base_url": msh_url, "helseid_url": helseid_url}
    options["api_version"] = api_version

    # 3. one DPoP proof and one token request, before the hub runs (a quiet loop)
    configured = SigningKey.from_file(key_file, alg=options.get("algorithm")).alg
    tokens, token = await token_round_trips(helseid_url, SigningKey.from_file(key_file, alg=configured), 200)
    algorithms: tuple[Algorithm, ...] = ("PS512", "RS256")
    proofs: dict[str, Callable[[], object]] = {
        alg: functools.partial(
            dpop_proof, SigningKey.from_file(key_file, alg=alg), "POST", f"{msh_url}/messages", access_token=token
        )
        for alg in algorithms
    }
    for alg, us in medians_us(proofs, 1000).items():
        which = ", the configured one" if alg == configured else ""
        print(f"DPoP proof {alg}{which}: median {us:,.0f} us (dpop_proof for an API call, RSA-2048 key; 1000 calls)")
    print(
        f"HelseID token request: median {statistics.median(tokens) * 1000:.1f} ms, p99 {pct(tokens, 0.99) * 1000:.1f} "
        "ms (HelseIdClient, nonce known: one POST with a new assertion and proof, checked by the fake HelseID "
        "in this process; 200 requests)"
    )

    # NHN only: Helsenorge's party (the bus in the embedded default) is left to the EDI side for this bench
    settings = dataclasses.replace(settings, adapters={"edi2": options})
    register = register.replaced(
        [dataclasses.replace(p, adapter="edi2", endpoint=None) for p in register.remote_parties]
    )
    acks = Acks(sim)
    post = "POST /messages" if api_version == "3" else "POST /Messages"
    async with Gateway(settings, register=register) as hub:
        deadline = time.monotonic() + WITHIN_S
        while api_version == "3" and not set(sim.state.configurations) >= SENDERS:  # PUT /mshconfigurations
            if time.monotonic() > deadline:
                raise SystemExit("the hub never configured its HER-ids at NHN")
            await asyncio.sleep(0.05)

        # 1. throughput: n accepted while the worker is not running, then delivered
        batch = [to_stolav(i) for i in range(n)]
        for body, _msg_id in batch:
            await hub.submit(body, BENCH)
        started = time.time()
        hub.start_background()
        last_ack = max((await acks.wait({msg_id for _body, msg_id in batch})).values())
        await all_sent(hub, n)
        elapsed = last_ack - started
        print(
            f"delivered: {n} messages to {STOLAV} through edi2, API v{api_version} ({post} with DPoP), in "
            f"{elapsed:.1f} s = {n / elapsed:.0f} messages/s (the worker started on {n} queued, {len(SENDERS)} lanes; "
            "until NHN had acknowledged the last)"
        )
        if api_version == "3":
            lag = await caught_up(hub, sim) - last_ack
            print(f"receive side: the hub had processed NHN's notifications about them {lag:.1f} s later (SSE stream)")

        # 2. latency: one message at a time, from submit returning to NHN's transport acknowledgment
        latencies = []
        for i in range(n):
            body, msg_id = to_stolav(n + i)
            await hub.submit(body, BENCH)
            accepted = time.time()
            latencies.append((await acks.wait({msg_id}))[msg_id] - accepted)
        print(
            f"accept -> transport-acknowledged: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {pct(latencies, 0.99) * 1000:.1f} ms ({n} messages one at a time: submit returned -> "
            "NHN's MessageDeliveryStateUpdated, Acknowledged, in its notification log)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--api-version", choices=("3", "2"), default="3")
    args = parser.parse_args()
    configure(fmt="console", level="warning", stream=sys.stderr)
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-edi2-") as work:
        asyncio.run(run(args.messages, args.api_version, Path(work)))
    print(
        f"(whole run {time.perf_counter() - started:.0f} s with the dev PKI and start-up; "
        f"load average {os.getloadavg()[0]:.1f} at the end)"
    )


if __name__ == "__main__":
    main()
