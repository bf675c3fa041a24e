"""Routing in one place: register parties, the default route for HER-ids outside the region, E21 from the
directory's answer, and where AppRecs go."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core import build_core
from gateway.errors import UnknownReceiver
from gateway.model.envelope import Envelope
from gateway.routing import Listing, Route, Router

from .region import fixture_bytes, settings_for

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs, copy to LiO
OUTSIDE = "8123456"  # a HER-id no party of the SiO register has


class FakeDirectory:
    """The national register, as a test wants it: a set of HER-ids that are no communication party."""

    def __init__(self, unknown: set[str]) -> None:
        self.unknown = unknown
        self.asked: list[str] = []

    async def listing(self, her_id: str) -> Listing:
        self.asked.append(her_id)
        if her_id in self.unknown:
            return Listing(f"HER-id {her_id} is not in the Adresseregister.")
        return Listing(None, "Trondheim legesenter / Fastlegene")


def router_for(tmp_path: Path, default_adapter: str | None = None) -> Router:
    return build_core(settings_for(tmp_path, routing={"default_adapter": default_adapter})).router


def envelope_to(tmp_path: Path, receiver: str) -> Envelope:
    body = fixture_bytes(TEMPLATE).replace(b"7200101", receiver.encode())
    judgement = build_core(settings_for(tmp_path)).validator.judge(body, check_receiver=False)
    assert judgement.envelope is not None
    return judgement.envelope


class TestRoutes:
    def test_register_parties(self, tmp_path: Path) -> None:
        router = router_for(tmp_path)
        local, remote = router.route(["7103001"]), router.route(["7200101", "7200000"])
        assert local is not None and (local.channel, local.destination) == ("local", "")
        assert remote is not None and remote.channel == "http" and remote.destination.startswith("http://")

    def test_outside_the_register_only_with_a_default_route(self, tmp_path: Path) -> None:
        assert router_for(tmp_path).route([OUTSIDE]) is None
        assert router_for(tmp_path, "edi2").route([OUTSIDE]) == Route(OUTSIDE, "edi2")
        assert router_for(tmp_path, "edi2").route(["../../etc"]) is None  # not a HER-id: no route at all


class TestPlan:
    async def test_default_route_plans_a_delivery_the_directory_allows(self, tmp_path: Path) -> None:
        router = router_for(tmp_path, "edi2")
        router.directory = directory = FakeDirectory(set())
        planned = await router.plan(envelope_to(tmp_path, OUTSIDE), now=1_800_000_000.0)
        assert [(d.receiver_her, d.channel) for d in planned] == [(OUTSIDE, "edi2"), ("7103001", "local")]
        assert [d.receiver_name for d in planned] == ["Trondheim legesenter / Fastlegene", ""]
        assert directory.asked == [OUTSIDE]  # register parties need no lookup

    async def test_the_directorys_refusal_is_e21_with_its_answer(self, tmp_path: Path) -> None:
        router = router_for(tmp_path, "edi2")
        router.directory = FakeDirectory({OUTSIDE})
        with pytest.raises(UnknownReceiver, match="not in the Adresseregister") as caught:
            await router.plan(envelope_to(tmp_path, OUTSIDE), now=1_800_000_000.0)
        assert caught.value.apprec_code == "E21"

    async def test_without_a_default_route_an_outside_receiver_is_e21(self, tmp_path: Path) -> None:
        with pytest.raises(UnknownReceiver, match="not in the address register"):
            await router_for(tmp_path).plan(envelope_to(tmp_path, OUTSIDE), now=1_800_000_000.0)


class TestReplies:
    def test_an_apprec_goes_back_the_way_its_sender_is_reached(self, tmp_path: Path) -> None:
        """From the hub's side the original's sender (Skaun) is local; from outside the register, the default route."""
        router = router_for(tmp_path, "edi2")
        original = envelope_to(tmp_path, OUTSIDE)
        reply = router.reply(original)
        assert reply is not None and reply.channel == "local" and reply.receiver_her == original.sender_her
