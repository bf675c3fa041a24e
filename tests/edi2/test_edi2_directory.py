"""A message to a HER-id outside the region goes by the default route (edi2) - or is refused E21 at submit
with the Adresseregister's answer when the register says that HER-id is no communication party."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import UnknownReceiver
from gateway.testing.nhn.ar import REQUESTS, SyntheticParty, ar_app, fixture_parties

from ..conftest import require_shared
from ..region import ADMIN, fixture_bytes, with_msg_id
from .nhn_region import nhn_region

TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO


async def test_outside_receivers_are_checked_in_the_adresseregister(tmp_path: Path) -> None:
    require_shared()
    known = "8123456"  # a GP office in Trondheim, outside the region but a communication party
    synthetic = [SyntheticParty(known, "Fastlegene", "8123450", "Trondheim legesenter")]
    app = ar_app(fixture_parties(), username="sio", password="hemmelig", synthetic=synthetic)
    async with TestServer(app, host="127.0.0.1") as ar:
        options = {"ar_url": str(ar.make_url("/v1/Ar")), "ar_username": "sio", "ar_password": "hemmelig"}
        async with nhn_region(tmp_path, adapter_options=options) as r:
            unknown = with_msg_id(fixture_bytes(TO_STOLAV).replace(b"7200101", b"8999999"))
            with pytest.raises(UnknownReceiver, match="not in the Adresseregister") as caught:
                await r.hub.submit(unknown, ADMIN)
            assert caught.value.apprec_code == "E21"
            not_a_party = with_msg_id(fixture_bytes(TO_STOLAV).replace(b"7200101", b"12345"))
            with pytest.raises(UnknownReceiver, match="not a valid communication party"):
                await r.hub.submit(not_a_party, ADMIN)  # the register's fixture for 12345 says so
            record, created = await r.hub.submit(
                with_msg_id(fixture_bytes(TO_STOLAV).replace(b"7200101", known.encode())), ADMIN
            )
            assert created
            view = await r.hub.store.get(record.id)
            assert view is not None
            assert {(d.receiver_her, d.channel) for d in view.deliveries} >= {(known, "edi2")}
            first = next(t for t in view.trace if t.receiver_her == known)  # the operator sees who it is
            assert first.reason == f"to {known} (PRIM) via edi2: Trondheim legesenter / Fastlegene"
            assert app[REQUESTS] == ["8999999", "12345", known]  # one question each; the region's own are not asked
