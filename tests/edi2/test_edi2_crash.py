"""Proof that nothing is lost or doubled on the way in from NHN: the hub is killed with SIGKILL over and over
while St. Olavs' epikriser stream in through NHN's Meldingstjener; at the end every one is in the GP
office's inbox exactly once, NHN has every one marked downloaded, and the offset the hub keeps is NHN's last.

Real processes on loopback: `gateway sim nhn` (the Meldingstjener API v3, the fake HelseID with the hub's
client, St. Olavs 7200101 as a scripted EDI peer) and `gateway serve` (config/gateway.toml with its data in
tmp, `[adapters.edi2]` at the simulator, `receive = "stream"`), real SQLite. The peer sends through the
simulator's control API from a task, steadily, so the simulator keeps taking messages while the hub is
down. The kills are driven by time, not by counting messages: after each (re)start the hub lives a random
0.3-1.5 times its last start-up time, so it gets the same share of work done between kills on a fast
machine and on a slow one. Killing goes on until every message is sent and at least KILLS kills happened.
The sender waits for the first kill before sending its second half, so at least one kill falls while
messages are streaming in whatever the machine's speed. Waits are bounds for a stuck run, never timings.
The durability checks come first; then the chaos itself; then a clean SIGTERM. The last line printed also
says how the hub's AppRecs went back: each should be NHN's apprec call, but a kill can now make the edi2
adapter send one as a plain message (reported with this test, not yet asserted: see adapters/edi2/transport.py,
``_take`` writes the ``in:`` mapping after the message is stored, ``_answer`` deletes it after posting).
"""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from adapters.edi2.msh import SentStatus

from ..region import fixture_bytes, with_msg_id
from .processes import (
    HUB_UP_S,
    SIM_UP_S,
    NhnReader,
    Ports,
    local_her_ids,
    pki_init,
    start_hub,
    start_sim,
    terminate,
    wait_up,
    write_hub_config,
    write_sim_config,
)

# slow; the timeout is only a bound for a stuck run - a loaded machine may take a few minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MESSAGES = 600
KILLS = 8
MAX_KILLS = KILLS + 12  # then killing stops even if sending is not done: a bound on a slow machine's time
UPTIME = (0.3, 1.5)  # the hub lives this many times its last start-up time before the next kill
# the peer's pace: the hub is down about half the time, so a backlog builds up and most kills land while it
# works through notifications (caught up, it follows the stream; after a restart it polls the backlog first)
SEND_EVERY_S = 0.02
SETTLE_S = 300.0  # a bound for a stuck hub, not a measure: a loaded machine catches up slowly
STOLAV, GP = "7200101", "7102001"
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # 7200101 -> GP 7102001 (copy to Frøya)
OFFSET_KEY = "adapter:edi2:offset"


@dataclass
class Hub:
    """The hub's process and files; ``start`` (re)starts it and waits until it answers."""

    config: Path
    log: Path
    ports: Ports
    process: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.config.parent / "hub" / "gateway.sqlite"

    async def start(self) -> None:
        self.process = start_hub(self.config, self.log)
        await wait_up(
            self.process, [f"{self.ports.api_url}/healthz"], what="the hub", within_s=HUB_UP_S, logs=self.log.parent
        )


@dataclass
class Chaos:
    hub: Hub
    rng: random.Random = field(default_factory=lambda: random.Random(20261210))
    sent: dict[str, str] = field(default_factory=dict)  # MsgId -> NHN message id
    kills: int = 0
    kills_while_sending: int = 0
    start_s: list[float] = field(default_factory=list)  # each (re)start's duration, kill to healthy
    first_kill: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_all(self, session: aiohttp.ClientSession, url: str, msg_ids: list[str]) -> None:
        """St. Olavs sends each epikrise once, steadily, to the GP office. NHN is never down, so every send
        must be taken (201). Halfway it waits for the first kill: the design guarantees a kill mid-stream."""
        template = fixture_bytes(EPIKRISE)
        for i, msg_id in enumerate(msg_ids):
            if i == len(msg_ids) // 2:
                await self.first_kill.wait()
            document = base64.b64encode(with_msg_id(template, msg_id)).decode("ascii")
            body = {"businessDocument": document, "receiverHerIds": [GP]}
            async with session.post(f"{url}/_sim/peers/{STOLAV}/messages", json=body) as response:
                assert response.status == 201, await response.text()
                self.sent[msg_id] = (await response.json())["id"]
            await asyncio.sleep(SEND_EVERY_S)

    async def kill_repeatedly(self, sending: asyncio.Task[None]) -> None:
        """SIGKILL the hub after a random share of its last start-up time, restart it, and again - until
        sending is done and at least KILLS kills happened (at most MAX_KILLS)."""
        while True:
            await asyncio.sleep(self.rng.uniform(*UPTIME) * self.start_s[-1])
            await self.kill_and_restart()
            if (self.kills >= KILLS and sending.done()) or self.kills >= MAX_KILLS:
                return

    async def kill_and_restart(self) -> None:
        assert self.hub.process is not None
        self.hub.process.send_signal(signal.SIGKILL)
        self.kills += 1
        self.kills_while_sending += len(self.sent) < MESSAGES
        self.first_kill.set()
        began = time.monotonic()
        await asyncio.to_thread(self.hub.process.wait)
        await self.hub.start()
        self.start_s.append(time.monotonic() - began)


def store_rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """A read-only look into the hub's SQLite (it may be running: WAL lets a reader in)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def received(db: Path) -> Counter[str]:
    """MsgId -> how many times the hub stored it as a good received message for the GP office."""
    rows = store_rows(
        db,
        """SELECT msg_id FROM messages WHERE direction = 'in' AND receiver_her = ? AND kind != 'apprec-1.1'
           AND state IN ('received', 'delivered')""",
        GP,
    )
    return Counter(str(r[0]) for r in rows)


def stored_offset(db: Path) -> int:
    rows = store_rows(db, "SELECT value FROM meta WHERE key = ?", OFFSET_KEY)
    return int(str(rows[0][0])) if rows else 0


def active_deliveries(db: Path) -> int:
    """Deliveries the hub still has to send (its AppRecs to St. Olavs)."""
    return int(str(store_rows(db, "SELECT COUNT(*) FROM deliveries WHERE state IN ('queued', 'retrying')")[0][0]))


async def settled(hub: Hub, reader: NhnReader, session: aiohttp.ClientSession, sim_url: str) -> bool:
    """Nothing more will happen: every epikrise stored, every AppRec the hub owes sent, NHN's log for our
    HER-ids final (each message St. Olavs got from us has its delivery state written: the peer's steps are
    done), and the hub has processed that log to its last offset. Polled until true or SETTLE_S (stuck)."""
    deadline = time.monotonic() + SETTLE_S
    her_ids = local_her_ids()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if hub.process is not None and hub.process.poll() is not None:
            raise AssertionError(f"the hub exited with {hub.process.returncode} on its own (log: {hub.log})")
        if sum(received(hub.db).values()) < MESSAGES or active_deliveries(hub.db):
            continue
        async with session.get(f"{sim_url}/_sim/peers/{STOLAV}/received") as response:
            at_peer = {m["id"] for m in await response.json()}
        last, log = await reader.last_offset(her_ids)
        told = {message_id for kind, message_id in log if kind == "MessageDeliveryStateUpdated"}
        if at_peer <= told and stored_offset(hub.db) == last:
            return True
    return False


def test_sigkill_while_notifications_stream_in_loses_nothing(tmp_path: Path) -> None:
    """600 epikriser through NHN, ≥8 SIGKILLs of the hub, the first mid-stream: each in the GP's inbox
    exactly once, each marked downloaded at NHN, the stored offset NHN's last for our HER-ids."""
    ports = Ports.free()
    data_dir = tmp_path / "hub"
    config = write_hub_config(
        tmp_path / "gateway.toml",
        data_dir,
        ports,
        edi2={"receive": "stream", "poll_interval_s": 0.2},
        delivery={"lease_s": 3.0, "poll_interval_s": 0.1},
        retry={"base_s": 0.2, "cap_s": 2.0},
    )
    pki_init(config)
    key_file = data_dir / "helseid" / "client.key"
    peer = {"her_id": STOLAV, "name": "Orkdal sjukehus, medisinsk avdeling", "transport": "Acknowledged"}
    # the peer does not answer (it gets only AppRecs from us, which it never answers anyway): NHN's log for
    # our HER-ids ends once the last AppRec's transport receipt is written
    sim_config = write_sim_config(
        tmp_path / "sim.toml", ports, key_file, [{**peer, "apprec": "none", "delay_seconds": 0}]
    )
    sim = start_sim(sim_config, key_file, tmp_path / "sim.log")
    hub = Hub(config, tmp_path / "gateway.log", ports)
    chaos = Chaos(hub)
    msg_ids = [str(uuid.uuid4()) for _ in range(MESSAGES)]
    took: dict[str, float] = {}
    statuses: dict[str, SentStatus | None] = {}
    at_peer: list[dict[str, object]] = []  # what St. Olavs got from us: the AppRecs (NHN-built or not)
    last_offset = 0
    code = None

    async def run() -> bool:
        nonlocal last_offset, code
        await wait_up(
            sim,
            [f"{ports.msh_url}/_sim/peers/{STOLAV}/received", f"{ports.helseid_url}/.well-known/openid-configuration"],
            what="the NHN simulator",
            within_s=SIM_UP_S,
            logs=tmp_path,
        )
        began = time.monotonic()
        await hub.start()
        chaos.start_s.append(time.monotonic() - began)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            began = time.monotonic()
            sending = asyncio.ensure_future(chaos.send_all(session, ports.msh_url, msg_ids))
            await asyncio.gather(chaos.kill_repeatedly(sending), sending)
            took["sending and killing"] = time.monotonic() - began
            reader = NhnReader(ports, key_file, session)
            done = await settled(hub, reader, session, ports.msh_url)
            took["settling"] = time.monotonic() - began - took["sending and killing"]
            assert hub.process is not None
            code = await asyncio.to_thread(terminate, hub.process)
            statuses.update(await reader.statuses(list(chaos.sent.values()), GP))
            async with session.get(f"{ports.msh_url}/_sim/peers/{STOLAV}/received") as response:
                at_peer.extend(await response.json())
            last_offset, _ = await reader.last_offset(local_her_ids())
            return done

    try:
        done = asyncio.run(run())
    finally:
        if hub.process is not None and hub.process.poll() is None:
            hub.process.kill()
            hub.process.wait()
        sim_code = terminate(sim)
    logs = f"(logs: {hub.log}, {tmp_path / 'sim.log'})"
    stuck = "" if done else f" - the hub did not settle within {SETTLE_S:.0f} s"
    # what matters first: nothing lost, nothing doubled, nothing left at NHN, the offset where NHN's log ends
    assert set(chaos.sent) == set(msg_ids), "the peer sent every message (NHN took each)"
    got = received(hub.db)
    missing = set(msg_ids) - set(got)
    twice = sorted(m for m, n in got.items() if n > 1)
    assert not missing, f"the GP's inbox is missing {len(missing)} of {MESSAGES} epikriser{stuck} {logs}"
    assert not twice, f"the GP's inbox holds {len(twice)} epikriser more than once: {twice[:5]} {logs}"
    assert set(got) == set(msg_ids), "nothing else arrived for the GP"
    not_downloaded = [m for m, s in statuses.items() if s is None or s.transport_state != "Acknowledged"]
    assert not not_downloaded, f"NHN has {len(not_downloaded)} messages not marked downloaded{stuck} {logs}"
    assert stored_offset(hub.db) == last_offset, f"the hub's stored offset is NHN's last{stuck} {logs}"
    assert done, f"the hub settled{stuck} {logs}"
    # then the chaos itself - what the design guarantees, whatever the machine's speed
    assert chaos.kills_while_sending >= 1, "the first kill falls while messages are streaming in"
    assert code == 0, f"the hub exits 0 on SIGTERM {logs}"
    assert sim_code == 0, "the simulator exits 0 on SIGTERM"
    duplicates = store_rows(hub.db, "SELECT COALESCE(SUM(duplicates), 0) FROM messages WHERE direction = 'in'")
    built = sum(1 for m in at_peer if m["isAppRec"])
    answered = sum(1 for s in statuses.values() if s is not None and s.apprec_status is not None)
    # every AppRec went back as NHN's apprec call (NHN built it), however the kills fell - never as a message
    assert answered == MESSAGES, f"{MESSAGES - answered} epikriser were not answered through NHN {logs}"
    assert len(at_peer) == built, f"St. Olavs got {len(at_peer) - built} AppRecs as plain messages {logs}"
    print(
        f"kills {chaos.kills} ({chaos.kills_while_sending} while sending); redeliveries caught as duplicates "
        f"{duplicates[0][0]}; answered with NHN's apprec call {answered}/{MESSAGES}; St. Olavs got "
        f"{built} NHN-built AppRecs and {len(at_peer) - built} other messages; start-up "
        f"{min(chaos.start_s):.1f}-{max(chaos.start_s):.1f} s; "
        + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in took.items())
    )
