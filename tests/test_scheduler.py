"""Housekeeping jobs: certificate expiry warnings once per threshold, failing runs survived, no overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.scheduler import Housekeeping, guarded
from gateway.security.keys import CertificateInfo
from gateway.store.sqlite import SqliteStore

from .region import settings_for

NOT_AFTER = datetime(2027, 1, 31, tzinfo=UTC)


class FakeCertificates:
    """Only the certificates() view the job reads; the real protection is tested in tests/security."""

    def certificates(self) -> list[CertificateInfo]:
        return [
            CertificateInfo(
                "7100101",
                "encrypt",
                "CN=Frøya",
                "0a1b",
                "CN=dev CA",
                NOT_AFTER - timedelta(days=900),
                NOT_AFTER,
                "pki/7100101/enc.crt",
            )
        ]


class TestCertificateWarnings:
    async def test_30_14_7_days_each_once(self, tmp_path: Path) -> None:
        """Warned at 30, 14 and 7 days left, once each, however often the job runs; expired is its own event."""
        clock = ManualClock()
        async with SqliteStore(tmp_path / "g.sqlite") as store:
            jobs = Housekeeping(store, FakeCertificates(), settings_for(tmp_path), clock)  # type: ignore[arg-type]
            seen = []
            for days_left in (40, 29, 28, 13, 13, 6, 1, -1, -2):
                clock.set(NOT_AFTER - timedelta(days=days_left))
                with capture_logs() as logs:
                    await jobs.certificates()
                seen += [(days_left, e["event"], e.get("source")) for e in logs]
        assert [(d, e) for d, e, _ in seen] == [
            (29, "security.certificate_expiring"),
            (13, "security.certificate_expiring"),
            (6, "security.certificate_expiring"),
            (-1, "security.certificate_expired_in_use"),
        ]
        assert all(source == "pki/7100101/enc.crt" for _, _, source in seen)


class TestJobsKeepRunning:
    async def test_a_failing_run_is_logged_and_survived(self) -> None:
        """A job that raises is logged with its name; the next run goes ahead."""
        runs = []

        async def flaky() -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("disk hiccup")

        job = guarded("flaky", flaky)
        with capture_logs() as logs:
            await job()
            await job()
        assert len(runs) == 2
        assert [(e["event"], e["job"]) for e in logs] == [("job.failed", "flaky")]

    async def test_scheduler_never_overlaps_a_job(self, tmp_path: Path) -> None:
        """With max_instances=1 a slow run is not joined by the next tick."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        active, peak = 0, 0

        async def slow() -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.3)
            active -= 1

        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(guarded("slow", slow), "interval", seconds=0.05, max_instances=1, coalesce=True)
        with capture_logs():
            scheduler.start()
            await asyncio.sleep(0.8)
            scheduler.shutdown(wait=False)
        assert peak == 1
