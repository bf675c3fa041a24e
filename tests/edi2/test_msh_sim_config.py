"""The runnable simulator, ``gateway sim nhn``: the command, and the TOML config that builds the simulator
(its API users, peers and their sends, faults, and the fake HelseID beside it).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.edi2.ar import AddressRegister, refusal
from gateway.cli import build_parser
from gateway.cli.sim import _ar, build, load_sim_config
from gateway.clock import ManualClock
from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.principal import Principal
from tests.conftest import require_shared
from tests.edi2.msh_harness import DIALOG, EPIKRISE_FILE, FROYA, GP, HITRA, LAB, ORKDAL_MED, START, Api

SIM_TOML = """
[server]
port = 8092

[msh]
api_users = ["7100201", "7102001", "7100101"]
first_offset = 5000
max_request_mb = 1

[auth]
client_id = "sio-gateway"
her_ids = ["7100201", "7102001", "7100101"]

[[peer]]
her_id = "7200101"
name = "Orkdal sjukehus, medisinsk avdeling"
transport = "Acknowledged"
apprec = "Rejected"
apprec_errors = [{ code = "E35", details = "Pasienten finnes ikke" }]
delay_seconds = 2
apprec_delay_seconds = 3

[[peer.send]]
file = "{epikrise}"
after_seconds = 5

[[peer]]
her_id = "7200201"
transport = "Abandoned"
apprec = "none"

[[fault]]
kind = "status"
status = 503
times = 2
path = "/messages*"
"""


class TestRunnable:
    def test_the_command_is_registered(self) -> None:
        args = build_parser().parse_args(["sim", "nhn", "--config", "sim.toml", "--port", "18092"])
        assert (args.simulator, args.port, args.config) == ("nhn", 18092, Path("sim.toml"))

    async def test_a_config_file_builds_the_simulator(self, tmp_path: Path) -> None:
        config_file = tmp_path / "sim.toml"
        config_file.write_text(SIM_TOML.replace("{epikrise}", EPIKRISE_FILE.as_posix()), encoding="utf-8")
        config = load_sim_config(config_file)
        assert config.principal == Principal("sio-gateway", frozenset({HITRA, GP, FROYA}))
        sim, app, helseid = build(config, clock=ManualClock(START), tick=False)
        assert helseid is None and sim.max_request_bytes == 2**20
        assert sim.network.peer(ORKDAL_MED).script.apprec_errors == (AppRecErrorInfo("E35", "Pasienten finnes ikke"),)
        assert sim.network.peer(LAB).script.apprec is None
        sim.advance(5)  # the peer's configured message arrives
        (record,) = sim.state.messages.values()
        assert record.sender == ORKDAL_MED and record.receivers == (GP, FROYA)
        async with TestClient(TestServer(app)) as client:
            api = Api(client, sim, principal="ignored-by-the-static-authorizer")
            assert (await api.call("GET", "/ping")).status == 200
            assert (await api.configure((HITRA, GP))).status == 204
            assert (await api.send(DIALOG, HITRA, [GP])).status == 503  # the configured fault
            notes = await api.notifications((GP,), 0)
            assert notes[0]["offset"] == 5000 and notes[0]["relatedMessageId"] == record.id

    def test_a_config_with_helseid_mounts_the_fake_helseid(self, tmp_path: Path) -> None:
        from joserfc.jwk import RSAKey

        key = RSAKey.generate_key(2048, private=True)
        (tmp_path / "client.jwk").write_text(json.dumps(key.as_dict(private=True)), encoding="utf-8")
        (tmp_path / "sim.toml").write_text(
            '[helseid]\nport = 18093\n[[helseid.client]]\nclient_id = "sio-gateway"\nkey_file = "client.jwk"\n'
            'her_ids = ["7100201"]\n',
            encoding="utf-8",
        )
        config = load_sim_config(tmp_path / "sim.toml")
        assert config.helseid is not None and "d" not in config.helseid.clients[0].public_jwk  # public half only
        _, _, helseid = build(config, tick=False)
        assert helseid is not None

    def test_a_bad_config_says_what_is_wrong(self, tmp_path: Path) -> None:
        from gateway.errors import ConfigError

        (tmp_path / "sim.toml").write_text('[[peer]]\nname = "no her_id"\n', encoding="utf-8")
        with pytest.raises(ConfigError, match="her_id"):
            load_sim_config(tmp_path / "sim.toml")

    async def test_a_config_with_ar_answers_for_its_peers_and_users_and_no_one_else(self, tmp_path: Path) -> None:
        """``[ar]``: the Adresseregister stand-in knows the peers and API users as communication parties, so
        a region pointed at it refuses any other HER-id E21 at submit."""
        require_shared()
        (tmp_path / "sim.toml").write_text(
            '[msh]\napi_users = ["7102001"]\n[ar]\nport = 18094\nusername = "u"\npassword = "p"\n'
            '[[peer]]\nher_id = "7200101"\nname = "Orkdal sjukehus, medisinsk avdeling"\n',
            encoding="utf-8",
        )
        config = load_sim_config(tmp_path / "sim.toml")
        sim, _, _ = build(config, tick=False)
        app = _ar(config, sim)
        assert app is not None
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            register = AddressRegister(str(server.make_url("/v1/Ar")), "u", "p", session=session)
            peer, user, nobody = [await register.lookup(h) for h in ("7200101", "7102001", "8999999")]
        assert refusal("7200101", peer) is None and peer is not None and peer.name.startswith("Orkdal")
        assert refusal("7102001", user) is None
        assert refusal("8999999", nobody) == "HER-id 8999999 is not in the Adresseregister"
