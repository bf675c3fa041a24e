"""Proof that nothing is lost or doubled on the bus when the receiving gateway dies: the hub - a real
`gateway serve` process reading its queues on a real RabbitMQ - is killed with SIGKILL over and over while
St. Olavs (a gateway in this process) sends epikriser to the GP office through the bus; at the end every one
is in the GP's inbox exactly once and every delivery St. Olavs made is settled by the hub's AppRec.

A message the hub had not settled when it died goes back to its queue (the broker sees the connection go)
and comes again; one it had stored but not yet settled comes again too, and its duplicate check answers it
without a second inbox entry or AppRec. The kills are driven by time, as in tests/edi2/test_edi2_crash.py
(a random 0.3-1.5 times the hub's last start-up time), and the sender waits for the first kill before its
second half, so at least one kill falls mid-stream on any machine. Waits are bounds for a stuck run.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import PROJECT_ROOT
from gateway.registry import dump_register, load_register
from gateway.replay import mirror_regions
from gateway.service import Gateway
from gateway.testing.rabbit import Broker
from gateway.testing.replay_processes import free_port

from ..edi2.processes import HUB_UP_S, start_hub, terminate, toml_text, wait_up
from ..edi2.test_edi2_crash import active_deliveries, received
from ..region import ADMIN, fixture_bytes, settings_for, shared_pki, with_msg_id
from .amqp_region import all_acknowledged, bus_options, new_bus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MESSAGES = 150
KILLS = 4
MAX_KILLS = KILLS + 8
UPTIME = (0.3, 1.5)
SEND_EVERY_S = 0.02
SETTLE_S = 300.0  # a bound for a stuck run, not a measure
STOLAV, GP = "7200101", "7102001"
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # 7200101 -> GP 7102001 (copy to Frøya)


def write_config(tmp_path: Path, port: int, pki: Path, amqp: dict[str, Any]) -> Path:
    """config/gateway.toml as the hub in tmp_path/hub, St. Olavs reached through the bus (no NHN, no edi2),
    with the test's dev PKI."""
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    data_dir = tmp_path / "hub"
    hub_register, _ = mirror_regions(base, hub_endpoint="", stolav_endpoint="", adapter="amqp", pki=pki)
    region = tmp_path / "hub-region.toml"
    region.write_text(dump_register(hub_register), encoding="utf-8")
    source = PROJECT_ROOT / "config" / "gateway.toml"
    config: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    config["gateway"].update(data_dir=str(data_dir), region=str(region))
    config["api"].update(host="127.0.0.1", port=port)
    if config.get("schemas", {}).get("bundle"):
        config["schemas"]["bundle"] = str((source.parent / config["schemas"]["bundle"]).resolve())
    config["routing"].pop("default_adapter", None)
    config["security"].update(
        protection="cms", dev_pki=False, trust_anchors=[str(pki / "ca.crt")], crls=[str(pki / "ca.crl")]
    )
    config["adapters"] = {"amqp": amqp}
    config["log"] = {"format": "json", "level": "info"}
    config["delivery"] = {"lease_s": 3.0, "poll_interval_s": 0.1}
    config["retry"] = {"base_s": 0.2, "cap_s": 2.0}
    path = tmp_path / "gateway.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    return path


async def test_sigkill_while_the_bus_delivers_loses_and_doubles_nothing(tmp_path: Path, broker: Broker) -> None:
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    namespace, vhost = new_bus(broker, [p.her_id for p in base])
    port = free_port()
    pki = shared_pki(tmp_path, base)
    config = write_config(tmp_path, port, pki, bus_options(broker, namespace, vhost, release_after_s=1.0))
    _, stolav_register = mirror_regions(base, hub_endpoint="", stolav_endpoint="", adapter="amqp", pki=pki)
    security = {"protection": "cms", "trust_anchors": (pki / "ca.crt",), "crls": (str(pki / "ca.crl"),)}
    stolav = Gateway(
        settings_for(tmp_path / "stolav", security=security, retry={"base_s": 0.2, "cap_s": 2.0}),
        register=stolav_register,
        adapter_options={"amqp": bus_options(broker, namespace, vhost)},
    )
    log = tmp_path / "hub.log"
    db = tmp_path / "hub" / "gateway.sqlite"
    rng = random.Random(20261127)
    start_s: list[float] = []
    kills = 0
    first_kill = asyncio.Event()
    sent: list[str] = []

    async def start() -> Any:
        began = time.monotonic()
        process = start_hub(config, log)
        await wait_up(process, [f"http://127.0.0.1:{port}/healthz"], what="the hub", within_s=HUB_UP_S, logs=tmp_path)
        start_s.append(time.monotonic() - began)
        return process

    async def send_all() -> None:
        template = fixture_bytes(EPIKRISE)
        for i in range(MESSAGES):
            if i == MESSAGES // 2:
                await first_kill.wait()
            record, _ = await stolav.submit(with_msg_id(template), ADMIN)
            sent.append(record.id)
            await asyncio.sleep(SEND_EVERY_S)

    async with stolav:
        stolav.start_background()
        hub = await start()
        sending = asyncio.create_task(send_all())
        while True:
            await asyncio.sleep(rng.uniform(*UPTIME) * start_s[-1])
            hub.send_signal(signal.SIGKILL)
            await asyncio.to_thread(hub.wait)
            kills += 1
            first_kill.set()
            hub = await start()
            if (kills >= KILLS and sending.done()) or kills >= MAX_KILLS:
                break
        await sending

        async def settled() -> bool:
            settled_here = await all_acknowledged(stolav, sent)
            return settled_here and sum(received(db).values()) >= MESSAGES and not active_deliveries(db)

        deadline = time.monotonic() + SETTLE_S
        while not await settled():
            assert hub.poll() is None, f"the hub exited with {hub.returncode} on its own (log: {log})"
            assert time.monotonic() < deadline, f"not settled in {SETTLE_S:.0f} s (log: {log})"
            await asyncio.sleep(0.5)
        inbox = received(db)
        assert len(inbox) == MESSAGES and set(inbox.values()) == {1}, inbox.most_common(3)  # each once
        assert await asyncio.to_thread(terminate, hub) == 0
