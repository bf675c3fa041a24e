"""The amqp transport with NHN's CPPA service (the test double serving Helsenorge.Messaging's CPP/CPA files
from ../shared): a CPA between the parties gives the receiver's queue and the ``cpaId`` property; with the
service down the message still goes, to the default queue and without ``cpaId`` (docs/cppa.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from adapters.amqp.channels import Channels
from adapters.amqp.fields import CMS_CONTENT_TYPE
from adapters.amqp.settings import AmqpSettings
from adapters.amqp.transport import AmqpTransport
from gateway.errors import ConfigError
from gateway.testing.cppa_server import CONTROL, REQUESTS, cppa_app, cppa_dir, running
from gateway.testing.rabbit import Broker
from gateway.transport import MemoryState, Packet, TransportContext

from ..conftest import require_shared
from ..cppa.helseid_protected import protected
from ..edi2.helseid_harness import CLIENT_ID, rsa_key
from .amqp_region import bus_options, new_bus
from .raw import take

OURS, THEIRS = "93238", "93252"  # the parties of Helsenorge.Messaging's CPA 49391409-…
CPA_ID = "49391409-e528-4919-b4a3-9ccdab72c8c1"


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared()
    if not cppa_dir().is_dir():
        pytest.skip("../shared/standards/nhn/cppa is not beside this checkout")


def _packet() -> Packet:
    return Packet(
        body=b"\x30\x80 bytes as they are",
        message_id=str(uuid.uuid4()),
        from_her=OURS,
        to_her=THEIRS,
        content_type=CMS_CONTENT_TYPE,
        subject="DIALOG_INNBYGGER_EKONTAKT",
        reference="ref",
    )


async def test_a_cpa_names_the_queue_and_its_id_travels(broker: Broker) -> None:
    namespace, vhost = new_bus(broker, [OURS, THEIRS])
    app = cppa_app()
    async with running(app) as url:
        options = bus_options(broker, namespace, vhost, cppa_url=url)
        async with AmqpTransport(TransportContext(options=options, state=MemoryState())) as transport:
            await transport.send(_packet())
            with_cpa = await take(broker, vhost, f"{THEIRS}_async")

            app[CONTROL].fail_status = 503  # the service away: the message goes all the same
            transport.channels.forget(OURS, THEIRS)
            await transport.send(_packet())
            without = await take(broker, vhost, f"{THEIRS}_async")
    assert with_cpa.properties["cpaId"] == CPA_ID
    assert (with_cpa.properties["fromHerId"], with_cpa.properties["toHerId"]) == (OURS, THEIRS)
    assert "cpaId" not in without.properties  # no CPA known: HITS 1216 leaves it out


async def test_without_a_cppa_service_the_default_queue_and_no_cpa_id(broker: Broker) -> None:
    namespace, vhost = new_bus(broker, [OURS, THEIRS])
    options = bus_options(broker, namespace, vhost)
    async with AmqpTransport(TransportContext(options=options, state=MemoryState())) as transport:
        await transport.send(_packet())
    message = await take(broker, vhost, f"{THEIRS}_async")
    assert "cpaId" not in message.properties


def test_a_wrong_cppa_url_stops_the_start_not_each_send() -> None:
    for wrong in ("cppa.test.grunndata.nhn.no", "https://user:pw@cppa.test/", "https://cppa.test/?x=1"):
        with pytest.raises(ConfigError):
            AmqpSettings.from_options({"url": "amqp://127.0.0.1:5672", "cppa_url": wrong})


async def test_the_cppa_service_is_asked_with_helseids_dpop_token(tmp_path: Path) -> None:
    """NHN's /v2/ variant: the transport's channels ask with the HelseID client the settings name."""
    (tmp_path / "helseid.jwk").write_text(json.dumps(rsa_key("client").as_dict(private=True)), encoding="utf-8")
    async with protected() as world:
        settings = AmqpSettings.from_options(
            {
                "url": "amqp://127.0.0.1:5672",
                "cppa_url": world.url,
                "helseid_url": world.issuer,
                "client_id": CLIENT_ID,
                "key_file": "helseid.jwk",
            }
        )
        channels = Channels(settings, data_dir=str(tmp_path))
        try:
            channel = await channels.of(OURS, THEIRS)
        finally:
            await channels.aclose()
    assert channel.source == "cpa" and channel.cpa_id == CPA_ID
    assert world.helseid.tokens_issued == 1 and world.app[REQUESTS] == [f"Agreements/HerIds/{OURS}/{THEIRS}"]


def test_the_cppa_helseid_settings_go_together_and_the_key_must_load(tmp_path: Path) -> None:
    base = {"url": "amqp://127.0.0.1:5672", "cppa_url": "https://cppa.test.grunndata.nhn.no/v2/"}
    with pytest.raises(ConfigError, match="go together"):
        AmqpSettings.from_options({**base, "helseid_url": "https://helseid-sts.test.nhn.no"})
    settings = AmqpSettings.from_options(
        {**base, "helseid_url": "https://helseid-sts.test.nhn.no", "client_id": "c", "key_file": "missing.jwk"}
    )
    with pytest.raises(ConfigError, match=r"missing\.jwk"):  # at start, not at the first lookup
        Channels(settings, data_dir=str(tmp_path))
