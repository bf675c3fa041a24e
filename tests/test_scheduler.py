"""Housekeeping jobs: certificate expiry warnings once per threshold, failing runs survived, no overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from structlog.testing import capture_logs

from gateway.clock import ManualClock, SystemClock
from gateway.scheduler import Housekeeping, guarded, start_scheduler
from gateway.security.keys import CertificateInfo
from gateway.security.protection import NoProtection
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
        """The gateway's own scheduler: while a slow lease reaping runs, the ticks that fall due start no second
        run beside it (they are skipped); once it ends, the job runs again."""
        store = SlowStore(tmp_path / "g.sqlite")
        settings = settings_for(tmp_path, housekeeping={"lease_reaper_s": 0.05})  # a tick every 50 ms
        async with store:
            # the system's clock: each tick falls in a turn of its own (a frozen clock would make every tick the
            # same period, which one run has taken)
            jobs = Housekeeping(store, NoProtection(), settings, SystemClock())
            skipped: list[str] = []
            with capture_logs():
                scheduler = start_scheduler(jobs, settings)
                scheduler.add_listener(lambda event: skipped.append(event.job_id), EVENT_JOB_MAX_INSTANCES)
                try:
                    await until(lambda: store.started >= 1)
                    await until(lambda: skipped.count("leases") >= 5 or store.started > 1)
                    assert store.started == 1, "a second run started while the first was still running"
                    store.release.set()  # the slow run ends; the next tick runs again
                    await until(lambda: store.started >= 3)
                finally:
                    store.release.set()
                    scheduler.shutdown(wait=False)
        assert store.peak == 1


class SlowStore(SqliteStore):
    """A store whose lease reaping blocks until the test releases it, counting runs and overlap."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = asyncio.Event()
        self.started = self.running = self.peak = 0

    async def reap_leases(self, *, now: float) -> int:
        self.started += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return 0


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for ``condition``; the bound is generous and only reached when something is stuck."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the conditions are counters and scheduler events
            await asyncio.sleep(0.01)
