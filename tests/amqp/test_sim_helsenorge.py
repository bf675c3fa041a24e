"""``gateway sim helsenorge`` - what ``./dev run`` starts beside the gateway when RabbitMQ is installed: a
local bus on the configured port with the region's Helsenorge party played by the HM peer bot. Started as
a process from a gateway config, it comes up, plays the party, and stops cleanly on TERM with its broker."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from gateway.cli.sim_helsenorge import citizen_message
from gateway.config import PROJECT_ROOT
from gateway.registry import Register
from gateway.testing.replay_processes import free_port, start
from gateway.validation.validator import Validator

from ..edi2.processes import toml_text
from ..region import fixture_bytes

HELSENORGE, FROYA = "7400001", "7100101"


def test_a_citizens_message_is_a_valid_one_from_helsenorge_to_home_care(
    region_validator: Validator, register: Register
) -> None:
    document = fixture_bytes("dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml")
    sender, receiver = register.get(HELSENORGE), register.get(FROYA)
    assert sender is not None and receiver is not None and sender.adapter == "amqp"
    message = citizen_message(document, sender, receiver)
    judged = region_validator.judge(message)
    assert judged.accepted, judged.error
    assert judged.envelope is not None
    assert (judged.envelope.sender_her, judged.envelope.receiver_her) == (HELSENORGE, FROYA)
    assert citizen_message(document, sender, receiver) != message  # a new MsgId every time


def _config(tmp_path: Path, port: int) -> Path:
    source = PROJECT_ROOT / "config" / "gateway.toml"
    config: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    config["gateway"].update(data_dir=str(tmp_path / "var"), region=str(source.parent / "sio-region.toml"))
    config["adapters"] = {"amqp": {**config["adapters"]["amqp"], "url": f"amqp://guest:guest@127.0.0.1:{port}"}}
    path = tmp_path / "gateway.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    return path


def test_the_local_bus_comes_up_plays_helsenorge_and_stops_on_term(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, port)
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "pki", "init", "--config", str(config)], check=True, capture_output=True
    )
    sim = start(["sim", "helsenorge", "--config", str(config)], tmp_path / "sim.log")
    try:
        deadline = time.monotonic() + 180  # a bound for a stuck start on a busy machine, not a timing
        while b"Helsenorge peer(s) 7400001 on the bus" not in (tmp_path / "sim.log").read_bytes():
            assert sim.poll() is None, (tmp_path / "sim.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the local bus did not come up"
            time.sleep(0.5)
    finally:
        sim.send_signal(signal.SIGTERM)
        code = sim.wait(timeout=120)
    assert code == 0, (tmp_path / "sim.log").read_text(errors="replace")
    # the broker went with it: nothing listens on its port any more
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the broker is still listening"
