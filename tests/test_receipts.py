"""The receipt loop end to end: EHR-decided AppRecs, unmatched AppRecs, the receipt deadline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.config import PROJECT_ROOT
from gateway.errors import Conflict
from gateway.model.apprec import AppRecError
from gateway.registry import Register, load_register
from gateway.store.base import DeliveryState, MessageState
from gateway.transport import Packet

from .region import ADMIN, fixture_bytes, region

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"
FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"
INNLEGGELSE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"


def gp_decides() -> Register:
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    gp = base.get("7102001")
    assert gp is not None
    return base.replaced([dataclasses.replace(gp, apprec="ehr")])


class TestEhrDecides:
    async def test_ehr_rejects_with_e35(self, tmp_path: Path) -> None:
        """With apprec = "ehr" the gateway waits; the EHR's E35 goes back as status 2 and rejects the delivery."""
        async with region(tmp_path, hub_register=gp_decides()) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            view = await r.stolav.store.get(record.id)
            assert view is not None
            states = {d.receiver_her: d.state for d in view.deliveries}
            assert states == {"7102001": DeliveryState.SENT, "7100101": DeliveryState.ACKNOWLEDGED}
            [received] = await r.hub.store.inbox("7102001")
            await r.hub.receipts.ehr_decides(
                received.id, status="2", errors=(AppRecError("E35", "Pasienten er ukjent her"),), actor="ehr"
            )
            with pytest.raises(Conflict):  # one AppRec per message and receiver
                await r.hub.receipts.ehr_decides(received.id, status="1", errors=(), actor="ehr")
            await r.drain()
            view = await r.stolav.store.get(record.id)
            assert view is not None
            gp = next(d for d in view.deliveries if d.receiver_her == "7102001")
            assert gp.state == DeliveryState.REJECTED
            assert gp.apprec is not None and gp.apprec.status == "2"
            assert gp.apprec.errors == (("E35", "Pasienten er ukjent her"),)
            assert view.message.state == MessageState.REJECTED


class TestAppRecIn:
    async def test_unmatched_apprec_is_kept_and_flagged(self, tmp_path: Path) -> None:
        """An AppRec answering nothing we sent is stored as unmatched, not dropped, and not answered."""
        async with region(tmp_path) as r:
            # St. Olavs receives a message the hub never sent through its outbound path, and answers it
            body = fixture_bytes(FORESPORSEL).replace(b"7102001", b"7200101").replace(b"7102000", b"7200000")
            packet = Packet(body, "t", "7100201", "7200101", "application/xml", "")
            assert (await r.stolav.receive(packet, via="memory")).accepted
            await r.drain()
            page = await r.hub.store.list_messages(state="unmatched")
            assert len(page.items) == 1 and page.items[0].kind == "apprec-1.1"
            view = await r.hub.store.get(page.items[0].id)
            assert view is not None and not view.deliveries


class TestDeadline:
    async def test_no_apprec_within_deadline_is_overdue_once(self, tmp_path: Path) -> None:
        """The receipts job: a warning at 72 h, overdue at 96 h after GenDate - each logged and traced once."""
        async with region(tmp_path, hub_register=gp_decides(), receipts={"deadline_h": 96.0, "warning_h": 72.0}) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            job = r.stolav.housekeeping
            with capture_logs() as logs:
                assert await job.receipts() == (0, 0)
                r.clock.advance(73 * 3600)
                assert await job.receipts() == (1, 0)
                assert await job.receipts() == (0, 0)
                r.clock.advance(24 * 3600)
                assert await job.receipts() == (0, 1)
                assert await job.receipts() == (0, 0)
            assert [(e["event"], e["code"], e["receiver"]) for e in logs] == [
                ("delivery.receipt_late", "delivery.receipt_late", "7102001"),
                ("delivery.overdue", "delivery.overdue", "7102001"),
            ]
            view = await r.stolav.store.get(record.id)
            assert view is not None and view.message.state == MessageState.OVERDUE
            assert [t.event for t in view.trace].count("delivery.overdue") == 1
            # a late AppRec still settles it
            [received] = await r.hub.store.inbox("7102001")
            await r.hub.receipts.ehr_decides(received.id, status="1", errors=(), actor="ehr")
            await r.drain()
            view = await r.stolav.store.get(record.id)
            assert view is not None and view.message.state == MessageState.ACKNOWLEDGED


class TestStatusThree:
    async def test_ok_with_errors_in_a_part_is_readable(self, tmp_path: Path) -> None:
        """AppRec status 3 settles the delivery as acknowledged-with-errors; the message stays readable."""
        async with region(tmp_path, hub_register=gp_decides()) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            [received] = await r.hub.store.inbox("7102001")
            await r.hub.receipts.ehr_decides(
                received.id, status="3", errors=(AppRecError("X99", "Vedlegg 2 kunne ikke leses"),), actor="ehr"
            )
            await r.drain()
            view = await r.stolav.store.get(record.id)
            assert view is not None
            states = {d.receiver_her: d.state for d in view.deliveries}
            assert states["7102001"] == DeliveryState.ACKNOWLEDGED_WITH_ERRORS
            assert view.message.state == MessageState.ACKNOWLEDGED_WITH_ERRORS
            page = await r.stolav.store.list_messages(direction="out")
            assert record.id in {m.id for m in page.items}


class TestEhrMayOnlyAnswerWhatIsItsToAnswer:
    async def test_no_apprec_for_an_apprec_nor_for_gateway_decided_parties(self, tmp_path: Path) -> None:
        """The EHR cannot answer an AppRec, nor a message whose receipts the gateway decides."""
        async with region(tmp_path, hub_register=gp_decides()) as r:
            await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            froya = await r.hub.store.inbox("7100101")  # Frøya's AppRecs are the gateway's to send
            with pytest.raises(Conflict, match="decided by the gateway"):
                await r.hub.receipts.ehr_decides(froya[0].id, status="1", errors=(), actor="ehr")
            await r.hub.submit(fixture_bytes(INNLEGGELSE), ADMIN)  # answered by St. Olavs and the legevakt
            await r.drain()
            apprecs = await r.hub.store.list_messages(direction="in", kind="apprec-1.1")
            assert len(apprecs.items) == 2
            with pytest.raises(Conflict, match="never answered"):
                await r.hub.receipts.ehr_decides(apprecs.items[0].id, status="1", errors=(), actor="ehr")
