"""The simulated Meldingstjener's scripted EDI peers, seen through API version 3: acknowledging,
rejecting or abandoning after their delays, answering with AppRecs (8221 codes too), and sending their own
messages into the region. The peers' time is moved by ``sim.advance()``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.peers import PeerScript
from tests.conftest import FIXTURES
from tests.edi2.msh_harness import (
    APPREC_NS,
    DIALOG,
    EPIKRISE,
    FROYA,
    GP,
    HITRA,
    INNLEGGELSE,
    LAB,
    LEGEVAKT,
    MELDAL,
    ORKDAL_MED,
    SKAUN,
    Api,
    apprec_root,
    configured_api,
)


@pytest.fixture(name="api")
async def _api() -> AsyncIterator[Api]:
    async with configured_api() as api:
        yield api


class TestPeers:
    async def test_a_peer_acknowledges_after_its_delay_and_answers_ok(self, api: Api) -> None:
        api.sim.network.peer(ORKDAL_MED).script = PeerScript(delay=30, apprec_delay=60)
        message_id = (await api.send(INNLEGGELSE, SKAUN, [ORKDAL_MED, LEGEVAKT])).body["id"]
        states = {s["receiverHerId"]: s for s in await api.status(message_id)}
        assert states[int(ORKDAL_MED)] == {
            "receiverHerId": int(ORKDAL_MED), "transportDeliveryState": "Unconfirmed", "sent": False, "apprecInfo": None
        }  # fmt: skip
        api.sim.advance(29)
        assert (await api.status(message_id))[0]["sent"] is True
        assert (await api.status(message_id))[0]["transportDeliveryState"] == "Unconfirmed"
        api.sim.advance(1)
        assert (await api.status(message_id))[0]["transportDeliveryState"] == "Acknowledged"
        assert (await api.status(message_id))[0]["apprecInfo"] is None
        api.sim.advance(60)
        info = (await api.status(message_id))[0]["apprecInfo"]
        assert info["appRecStatus"] == "Ok" and info["appRecErrorList"] == []
        types = [
            n["type"]
            for n in await api.notifications((SKAUN,), 0)
            if n["notificationTriggeredByHerId"] == int(ORKDAL_MED)
        ]
        assert types == [
            "MessageSentStateUpdated",
            "MessageDeliveryStateUpdated",
            "NewMessage",
            "MessageApprecInfoUpdated",
        ]
        apprec = (await api.call("GET", f"/messages/{info['appRecId']}")).body
        assert (apprec["senderHerId"], apprec["receiverHerIds"]) == (int(ORKDAL_MED), [int(SKAUN)])
        root = await apprec_root(api, info["appRecId"])
        assert root.find(f"{{{APPREC_NS}}}Sender/{{{APPREC_NS}}}Role").get("V") == "PRIM"
        assert api.sim.network.peer(ORKDAL_MED).received[0].id == message_id

    @pytest.mark.parametrize(("transport", "reason"), [("Rejected", "MessageError: unknown CPA"), ("Abandoned", None)])
    async def test_a_peer_rejects_or_abandons_without_an_apprec(
        self, api: Api, transport: str, reason: str | None
    ) -> None:
        api.sim.network.peer(ORKDAL_MED).script = PeerScript(transport=transport, reason=reason, delay=5)  # type: ignore[arg-type]
        message_id = (await api.send(INNLEGGELSE, SKAUN, [ORKDAL_MED])).body["id"]
        api.sim.advance(3600)
        (state,) = await api.status(message_id)
        assert (state["transportDeliveryState"], state["sent"], state["apprecInfo"]) == (transport, True, None)
        (note,) = [n for n in await api.notifications((SKAUN,), 0) if n["type"] == "MessageDeliveryStateUpdated"]
        assert note["description"] == (reason or "No ebXML acknowledgment from the receiver after sending and "
                                       "resending; delivery abandoned.")  # fmt: skip

    async def test_a_peer_rejects_with_8221_codes(self, api: Api) -> None:
        errors = (AppRecErrorInfo("E35", "Pasienten finnes ikke"), AppRecErrorInfo("X99", "Annen feil"))
        api.sim.network.peer(LAB).script = PeerScript(apprec="Rejected", apprec_errors=errors)
        message_id = (await api.send(DIALOG, HITRA, [LAB])).body["id"]
        api.sim.advance()
        info = (await api.status(message_id))[0]["apprecInfo"]
        assert info["appRecStatus"] == "Rejected"
        assert [(e["errorCode"], e["details"]) for e in info["appRecErrorList"]] == [
            ("E35", "Pasienten finnes ikke"), ("X99", "Annen feil")
        ]  # fmt: skip
        root = await apprec_root(api, info["appRecId"])
        assert root.find(f"{{{APPREC_NS}}}Status").get("V") == "2"
        assert [e.get("V") for e in root.findall(f"{{{APPREC_NS}}}Error")] == ["E35", "X99"]

    async def test_a_peer_sends_its_own_message_and_gets_our_apprec(self, api: Api) -> None:
        record = api.sim.network.send(ORKDAL_MED, EPIKRISE)
        assert record.receivers == (GP, FROYA)  # read from the document: primary, then the copy
        for her in (GP, FROYA):
            (note,) = await api.notifications((her,), 0)
            assert (note["type"], note["relatedMessageId"]) == ("NewMessage", record.id)
        ok = {"appRecSenderHerId": int(FROYA), "appRecStatus": "Ok"}
        apprec = await api.call("POST", f"/messages/{record.id}/apprec", json=ok)
        assert apprec.status == 202
        api.sim.advance()
        (received,) = api.sim.network.peer(ORKDAL_MED).received
        assert received.is_apprec and received.original_id == record.id
        assert (await api.status(apprec.body["id"]))[0]["transportDeliveryState"] == "Acknowledged"
        root = await apprec_root(api, apprec.body["id"])
        assert root.find(f"{{{APPREC_NS}}}Sender/{{{APPREC_NS}}}Role").get("V") == "COP"
        with pytest.raises(ValueError, match="API users"):
            api.sim.network.send(ORKDAL_MED, EPIKRISE, to=[LAB])

    @pytest.mark.parametrize(
        ("peer", "fixture", "receivers", "msg_type"),
        [
            (LAB, "svarrapport-1.4/svar-lab-biokjemi-latin1.xml", [GP], "SVAR_LAB"),
            (ORKDAL_MED, "plo-utskrivningsrapport-1.6/utskrivningsrapport-kopi-fastlege.xml", [MELDAL, GP],
             "UTSKRIVNINGSRAPPORT"),
        ],
    )  # fmt: skip
    async def test_peers_send_svarrapport_and_plo(
        self, api: Api, peer: str, fixture: str, receivers: list[str], msg_type: str
    ) -> None:
        """What an EDI user sends reaches the API users as it was sent (ISO-8859-1 too: only API users'
        own posts must be UTF-8)."""
        document = (FIXTURES / fixture).read_bytes()
        record = api.sim.network.send(peer, document)
        assert list(record.receivers) == receivers
        meta = (await api.call("GET", f"/messages/{record.id}")).body
        assert (meta["senderHerId"], meta["businessDocumentMsgType"]) == (int(peer), msg_type)
        body = (await api.call("GET", f"/messages/{record.id}/business-document")).body
        assert base64.b64decode(body["businessDocument"]) == document
        for her in receivers:
            assert [n["relatedMessageId"] for n in await api.notifications((her,), 0)] == [record.id]

    def test_scripts_are_checked(self) -> None:
        with pytest.raises(ValueError, match="8221"):
            PeerScript(apprec="Rejected")
        with pytest.raises(ValueError):
            PeerScript(transport="Lost")  # type: ignore[arg-type]
