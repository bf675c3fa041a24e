"""`gateway replay` (``--via nhn``, the default): the fixtures through the region as it runs now - the hub,
whose St. Olavs parties are reached through NHN's Meldingstjener, beside a local NHN (`gateway sim nhn`)
whose scripted EDI peers play St. Olavs, and - RabbitMQ installed - a local Tjenestebuss whose peer plays
Helsenorge. Outcomes only, never timings: it must pass on a busy machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.testing.rabbit import find_server
from gateway.testing.replay_nhn_side import as_sent_by

from .conftest import FIXTURES


@pytest.mark.slow
def test_replay_through_the_local_nhn_passes_every_fixture(tmp_path: Path) -> None:
    """Exit 0 with every fixture at its expected end state: St. Olavs' own fixtures sent by its peers and
    answered by the hub through NHN, the hub's answered by the peers, the broken ones refused at submit
    and - sent by a peer as a sender that does not validate would - answered by a negative AppRec that
    reaches the peer, or refused when unreadable."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^(\d+)/\1 fixtures reached their expected end state", out, re.M)
    assert "AppRec round trip: median" in out
    assert out.count("acknowledged (AppRec 1)") == 15  # 12 valid fixtures, three of them with a copy receiver
    for answer in (
        "rejected E10 (AppRec 2 sent)",
        "rejected E36 (AppRec 2 sent)",
        "rejected T02 (AppRec 2 sent)",
        "refused at transport: transport:not-well-formed-xml",
        "refused at transport: transport:unsupported-message",
        "not sent on: NHN has no such receiver",
    ):
        assert answer in out, answer
    # it really went through NHN: one gateway, edi2 both ways, no St. Olavs gateway
    hub_log = (tmp_path / "sio-hub" / "gateway.log").read_text()
    assert '"event": "edi2.sent"' in hub_log and '"event": "edi2.apprec_posted"' in hub_log
    assert '"via": "edi2"' in hub_log
    assert not (tmp_path / "st-olavs").exists()
    assert "[adapters.edi2]" in (tmp_path / "sio-hub" / "gateway.toml").read_text()
    assert (tmp_path / "sio-hub" / "helseid" / "client.key").is_file()
    assert "[[peer]]" in (tmp_path / "nhn" / "sim.toml").read_text()
    # and Helsenorge over the local Tjenestebuss (./dev test installs RabbitMQ): the HM peer took the hub's
    # message and answered with its AppRec, which acknowledged the delivery above
    if find_server() is not None:
        bus_log = (tmp_path / "sio-hub" / "helsenorge.log").read_text()
        assert '"event": "hm_peer.received"' in bus_log and '"sender": "7100201"' in bus_log
        assert '"event": "amqp.sent"' in hub_log and '"receiver": "7400001"' in hub_log


def test_a_pushed_fixture_names_the_peer_as_its_sender() -> None:
    """Only the sender's HER-ids change - the service's and its organisation's - not the receiver's."""
    register = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    hitra, peer, gp = register.get("7100201"), register.get("7200101"), register.get("7102001")
    assert hitra is not None and peer is not None and gp is not None
    original = (FIXTURES / "broken" / "bad-msgid.xml").read_bytes()

    pushed = as_sent_by(original, hitra, peer)

    sender = re.search(rb"<Sender>.*?</Sender>", pushed, re.S)
    receiver = re.search(rb"<Receiver>.*?</Receiver>", pushed, re.S)
    assert sender is not None and receiver is not None
    assert b"<Id>7200101</Id>" in sender.group() and b"<Id>7200000</Id>" in sender.group()
    assert b"7100201" not in pushed and b"7100200" not in pushed
    assert b"<Id>7102001</Id>" in receiver.group() and b"<Id>7102000</Id>" in receiver.group()
    assert pushed.replace(b"7200101", b"7100201").replace(b"7200000", b"7100200") == original
