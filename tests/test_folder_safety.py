"""Drop folders are shared with another system: nothing is followed out of the folder, nothing is taken
half-written or read when too large, nothing is overwritten, and every entry that is not taken is
reported once (issue 9, items 5 and 6)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.folder import atomic_write
from adapters.folder_fs import read_regular
from gateway.clock import ManualClock
from gateway.config import DropFolderSettings
from gateway.ehr import EhrFolder
from gateway.errors import MessageTooLarge, TransportError
from gateway.service import Gateway
from gateway.transport import InboundResult, Packet, TransportContext

from .region import settings_for
from .test_folder import filed, filed_as, watcher

SECRET = b"-----BEGIN PRIVATE KEY-----\nbm90IGEgcmVhbCBrZXk=\n-----END PRIVATE KEY-----\n"


class Recorder:
    """A handler that accepts well-formed-looking bodies and refuses the rest, remembering what it saw."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, packet: Packet) -> InboundResult:
        self.seen.append(packet.body)
        if packet.body.startswith(b"<"):
            return InboundResult(True, reference=f"ref-{len(self.seen)}")
        return InboundResult(False, code="T01", event="message.not_well_formed", message="not XML")


def ignored(logs: list[dict[str, Any]]) -> Counter[str]:
    """How often each entry was reported as not taken."""
    return Counter(e["file"] for e in logs if e["event"] == "folder.entry_ignored")


class TestNothingOutsideTheFolder:
    @pytest.mark.parametrize("sub", ["failed", "done", "processing"])
    async def test_a_linked_subfolder_is_never_used(self, tmp_path: Path, sub: str) -> None:
        """A subfolder replaced by a link stops the watcher with one error line; nothing moves through it."""
        drop, outside = tmp_path / "drop", tmp_path / "outside"
        drop.mkdir()
        outside.mkdir()
        (drop / sub).symlink_to(outside)
        atomic_write(drop, "good.xml", b"<ok/>")
        atomic_write(drop, "bad.xml", b"bad")
        handler = Recorder()
        folder = watcher(drop, handler)
        with capture_logs() as logs:
            for _ in range(3):
                assert await folder.scan() == 0
            await folder.start()  # taking up leftovers refuses it as well
            await folder.stop()
        assert not list(outside.iterdir()) and not handler.seen
        assert (drop / "good.xml").exists() and (drop / "bad.xml").exists() and (drop / sub).is_symlink()
        [error] = [e for e in logs if e["event"] == "folder.unusable"]
        assert error["log_level"] == "error" and error["folder"] == str(drop / sub)
        assert "symbolic link" in error["reason"]
        # put right, the folder is taken from again
        (drop / sub).unlink()
        with capture_logs() as logs:
            assert await folder.scan() == 2
        assert "folder.usable" in [e["event"] for e in logs]
        assert not list(outside.iterdir())

    async def test_a_linked_or_wrong_drop_folder_is_refused(self, tmp_path: Path) -> None:
        """The drop folder itself as a link, and a subfolder that is a file, are refused and named."""
        (tmp_path / "real").mkdir()
        atomic_write(tmp_path / "real", "a.xml", b"<a/>")
        (tmp_path / "drop").symlink_to(tmp_path / "real")
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "done").write_bytes(b"not a folder")
        handler = Recorder()
        with capture_logs() as logs:
            assert await watcher(tmp_path / "drop", handler).scan() == 0
            assert await watcher(tmp_path / "other", handler).scan() == 0
        errors = {e["folder"]: e["reason"] for e in logs if e["event"] == "folder.unusable"}
        assert "symbolic link" in errors[str(tmp_path / "drop")]
        assert "is not a folder" in errors[str(tmp_path / "other" / "done")]
        assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["a.xml"] and not handler.seen

    async def test_a_linked_file_is_not_read(self, tmp_path: Path) -> None:
        """Links to a key and to a valid message outside the folder are neither read nor moved; each is
        reported once, and no log line holds what they point to."""
        (tmp_path / "pki").mkdir()
        (tmp_path / "pki" / "ca.key").write_bytes(SECRET)
        (tmp_path / "elsewhere.xml").write_bytes(b"<a-valid-message/>")
        drop = tmp_path / "drop"
        drop.mkdir()
        (drop / "key.xml").symlink_to(tmp_path / "pki" / "ca.key")
        (drop / "message.xml").symlink_to(tmp_path / "elsewhere.xml")
        handler = Recorder()
        folder = watcher(drop, handler)
        with capture_logs() as logs:
            for _ in range(3):
                assert await folder.scan() == 0
        assert not handler.seen and not list((drop / "failed").iterdir())
        assert (drop / "key.xml").is_symlink() and (drop / "message.xml").is_symlink()
        assert ignored(logs) == {"key.xml": 1, "message.xml": 1}
        assert all("symbolic link" in e["reason"] for e in logs if e["event"] == "folder.entry_ignored")
        assert b"PRIVATE KEY" not in json.dumps(logs, default=str).encode()

    async def test_a_hard_linked_file_is_not_read(self, tmp_path: Path) -> None:
        """Hard links to a key and to a valid message outside the folder, and a packet whose metadata is a
        hard link, are not read: each is reported once and moved to failed/ with a reason; what they
        point to stays as it was and reaches no log line."""
        (tmp_path / "pki").mkdir()
        (tmp_path / "pki" / "ca.key").write_bytes(SECRET)
        (tmp_path / "elsewhere.xml").write_bytes(b"<a-valid-message/>")
        (tmp_path / "headers.json").write_bytes(json.dumps({"X-Message-Id": "m"}).encode())
        drop = tmp_path / "drop"
        drop.mkdir()
        os.link(tmp_path / "pki" / "ca.key", drop / "key.xml")
        os.link(tmp_path / "elsewhere.xml", drop / "message.xml")
        os.link(tmp_path / "headers.json", drop / "p.json")
        atomic_write(drop, "p.msg", b"<p/>")
        handler = Recorder()
        folder = watcher(drop, handler)
        with capture_logs() as logs:
            assert [await folder.scan() for _ in range(3)] == [3, 0, 0]
        assert not handler.seen
        reported = [e for e in logs if e["event"] == "folder.entry_ignored"]
        assert ignored(logs) == {"key.xml": 1, "message.xml": 1, "p.msg": 1}
        assert all("has other hard links" in e["reason"] and e["moved_to"].startswith("failed/") for e in reported)
        for name in ("key.xml", "message.xml", "p.msg"):
            _body, reason = filed_as(drop, "failed", name)
            assert reason.startswith("-\tfolder.entry_ignored\t-\nnot taken: ") and "has other hard links" in reason
        assert "metadata" in filed_as(drop, "failed", "p.msg")[1].splitlines()[1]
        assert (tmp_path / "pki" / "ca.key").read_bytes() == SECRET
        assert (tmp_path / "elsewhere.xml").read_bytes() == b"<a-valid-message/>"
        assert b"PRIVATE KEY" not in json.dumps(logs, default=str).encode()
        assert not list((drop / "processing").iterdir()) and not list((drop / "done").iterdir())

    async def test_a_file_published_by_link_then_unlink_is_taken(self, tmp_path: Path) -> None:
        """A writer that links its temporary file to the name and then removes the temporary: the file has
        one link once it has settled, and is taken."""
        clock = ManualClock(1_700_000_000)
        handler = Recorder()
        folder = watcher(tmp_path, handler, settle_s=1.0, clock=clock)
        (tmp_path / ".w.tmp").write_bytes(b"<linked/>")
        os.link(tmp_path / ".w.tmp", tmp_path / "linked.xml")
        assert await folder.scan() == 0
        (tmp_path / ".w.tmp").unlink()
        clock.advance(1.0)
        assert await folder.scan() in (0, 1)  # taken now, or - the unlink changed its ctime - at the next
        clock.advance(1.0)
        await folder.scan()
        assert handler.seen == [b"<linked/>"]
        assert filed_as(tmp_path, "done", "linked.xml")[0].read_bytes() == b"<linked/>"

    def test_reading_refuses_links_and_fifos_without_blocking(self, tmp_path: Path) -> None:
        """Even a link or FIFO swapped in after the look is refused when opened, and a FIFO does not block."""
        (tmp_path / "key").write_bytes(SECRET)
        os.symlink(tmp_path / "key", tmp_path / "link")
        os.mkfifo(tmp_path / "pipe")
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in ("link", "pipe"):
                with pytest.raises(OSError):
                    read_regular(fd, name, 1 << 20)
        finally:
            os.close(fd)


class TestEveryEntryReportedOnce:
    async def test_a_fifo_does_not_block_the_scan(self, tmp_path: Path) -> None:
        """A FIFO is never opened: the scan goes on past it, and it is reported once however often it runs."""
        os.mkfifo(tmp_path / "pipe.xml")
        atomic_write(tmp_path, "a.xml", b"<a/>")
        handler = Recorder()
        folder = watcher(tmp_path, handler)
        with capture_logs() as logs:
            assert [await folder.scan() for _ in range(3)] == [1, 0, 0]
        assert handler.seen == [b"<a/>"] and (tmp_path / "pipe.xml").exists()
        assert ignored(logs) == {"pipe.xml": 1}

    async def test_odd_entries_are_reported_once_and_regular_ones_moved_aside(self, tmp_path: Path) -> None:
        """A dangling link, a folder, over-long and non-UTF-8 names, and temporaries left for an hour are
        each reported once across many scans; the regular files among them go to failed/ with a reason."""
        clock = ManualClock(1_700_000_000)
        (tmp_path / "gone.xml").symlink_to(tmp_path / "nowhere")
        (tmp_path / "a-folder").mkdir()
        (tmp_path / ".half.xml").write_bytes(b"<half")  # a writer's temporary
        (tmp_path / "upload.xml.part").write_bytes(b"<up")
        long_name = "x" * 230 + ".xml"
        (tmp_path / long_name).write_bytes(b"<long/>")
        (tmp_path / os.fsdecode(b"caf\xe9.xml")).write_bytes(b"<latin/>")  # a Latin-1 name, not UTF-8
        handler = Recorder()
        folder = watcher(tmp_path, handler, clock=clock, stale_s=3600)
        with capture_logs() as logs:
            for _ in range(3):
                assert await folder.scan() == 0
            young = ignored(logs)
            clock.advance(3600)  # the temporaries have not changed for an hour: their writers gave up
            for _ in range(3):
                assert await folder.scan() == 0
        assert ".half.xml" not in young and "upload.xml.part" not in young
        reported = ignored(logs)
        assert set(reported.values()) == {1} and len(reported) == 6
        assert {"gone.xml", "a-folder", ".half.xml", "upload.xml.part", "caf?.xml"} < set(reported)
        assert not handler.seen
        moved = {name: text for name, _body, text in filed(tmp_path, "failed")}
        assert sorted(moved) == sorted([".half.xml", "upload.xml.part", "caf?.xml", long_name[:120] + "…"])
        assert all("folder.entry_ignored" in text and "not taken: " in text for text in moved.values())
        assert (tmp_path / "gone.xml").is_symlink() and (tmp_path / "a-folder").is_dir()
        assert set(os.listdir(tmp_path)) == {"gone.xml", "a-folder", "processing", "done", "failed"}


class TestCompleteAndNeverOverwritten:
    async def test_a_file_is_taken_only_once_it_has_settled(self, tmp_path: Path) -> None:
        """A file written in place in two steps is not taken half-written: only once it has stood still."""
        clock = ManualClock(1_700_000_000)
        handler = Recorder()
        folder = watcher(tmp_path, handler, settle_s=1.0, clock=clock)
        path = tmp_path / "two-steps.xml"
        path.write_bytes(b"<first-half")
        assert await folder.scan() == 0
        clock.advance(0.5)
        assert await folder.scan() == 0  # not still for long enough yet
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b" second-half/>")
        os.close(fd)
        clock.advance(0.7)
        assert await folder.scan() == 0  # it changed: the quiet period starts again
        assert await folder.scan() == 0
        clock.advance(1.0)
        assert await folder.scan() == 1
        assert handler.seen == [b"<first-half second-half/>"]

    async def test_same_name_twice_both_kept(self, tmp_path: Path) -> None:
        """Two files dropped under one name end up side by side, each with its own reason or id file."""
        handler = Recorder()
        folder = watcher(tmp_path, handler)
        for body in (b"first bad", b"second bad", b"<first-good/>", b"<second-good/>"):
            atomic_write(tmp_path, "same.xml", body)
            assert await folder.scan() == 1
        failed = filed(tmp_path, "failed")
        assert [name for name, _b, _t in failed] == ["same.xml", "same.xml"]
        assert sorted(body.read_bytes() for _n, body, _t in failed) == [b"first bad", b"second bad"]
        assert all(text.startswith("T01\tmessage.not_well_formed") for _n, _b, text in failed)
        done = filed(tmp_path, "done")
        assert sorted(text.splitlines()[0] for _n, _b, text in done) == ["ref-3", "ref-4"]
        assert sorted(body.read_bytes() for _n, body, _t in done) == [b"<first-good/>", b"<second-good/>"]

    async def test_put_back_never_overwrites(self, tmp_path: Path) -> None:
        """What a killed process left in processing/ goes back under its own name - or, when a new file
        has that name meanwhile, under a gateway-made one, with its metadata file still beside it."""
        processing = tmp_path / "processing"
        processing.mkdir()
        stem = "20250101T120000Z-0123456789ab"
        (processing / f"{stem}~p.json").write_bytes(b"{}")
        (processing / f"{stem}~p.msg").write_bytes(b"<old/>")
        (processing / "q.xml").write_bytes(b"<q/>")  # an older gateway's claim
        atomic_write(tmp_path, "p.msg", b"<new/>")
        folder = watcher(tmp_path, Recorder())
        await folder.start()
        await folder.stop()
        assert (tmp_path / "p.msg").read_bytes() == b"<new/>"
        assert (tmp_path / f"{stem}-p.msg").read_bytes() == b"<old/>" and (tmp_path / f"{stem}-p.json").exists()
        assert (tmp_path / "q.xml").read_bytes() == b"<q/>" and not list(processing.iterdir())


class TestSizeBeforeReading:
    def test_the_size_comes_from_fstat_not_from_reading(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file over the limit is refused without a single read."""
        (tmp_path / "big.xml").touch()
        os.truncate(tmp_path / "big.xml", 1001)

        def no_reading(*_args: object) -> bytes:
            raise AssertionError("read")

        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        monkeypatch.setattr(os, "read", no_reading)
        try:
            with pytest.raises(MessageTooLarge, match="at most 1000 bytes"):
                read_regular(fd, "big.xml", 1000)
        finally:
            monkeypatch.undo()
            os.close(fd)

    async def test_an_oversize_file_is_refused_unread(self, tmp_path: Path) -> None:
        """A sparse terabyte is refused with T01 message.too_large naming the limit; the cap itself is taken."""
        (tmp_path / "huge.xml").touch()
        os.truncate(tmp_path / "huge.xml", 1 << 40)  # sparse: nothing could read this into memory
        (tmp_path / "edge.xml").write_bytes(b"<" + b"x" * 998 + b">")
        (tmp_path / "over.xml").write_bytes(b"<" + b"x" * 999 + b">")
        handler = Recorder()
        with capture_logs() as logs:
            assert await watcher(tmp_path, handler, max_bytes=1000).scan() == 3
        assert [len(body) for body in handler.seen] == [1000]
        for name, size in (("huge.xml", 1 << 40), ("over.xml", 1001)):
            _body, reason = filed_as(tmp_path, "failed", name)
            assert reason.startswith("T01\tmessage.too_large\ttransport:not-well-formed-xml\n")
            assert f"is {size} bytes; this gateway accepts at most 1000 bytes" in reason
        refused = [e for e in logs if e["event"] == "folder.file_refused"]
        assert {e["code"] for e in refused} == {"message.too_large"} and len(refused) == 2

    async def test_the_gateway_passes_its_cap_to_drop_folders_and_the_adapter(self, tmp_path: Path) -> None:
        """schemas.max_message_bytes reaches the drop-folder watchers and the folder adapter's context."""
        settings = settings_for(tmp_path / "data", security={"protection": "none"}, schemas={"max_message_bytes": 100})
        drop, inbox = tmp_path / "drop", tmp_path / "inbox"
        settings = dataclasses.replace(
            settings,
            drop_folders=(DropFolderSettings(drop, ("*",), "drop", 0.02, settle_s=0.0),),
            adapters={**settings.adapters, "folder": {"inbox": str(inbox), "poll_interval_s": 0.02, "settle_s": 0}},
        )
        atomic_write(drop, "big.xml", b"<" + b"x" * 100 + b">")
        atomic_write(inbox, "big.msg", b"<" + b"x" * 100 + b">")
        async with Gateway(settings) as gateway:
            gateway.start_background()
            for _ in range(1200):  # outcomes, not timing: a generous bound for a busy machine
                if all(any((d / "failed").glob("*.reason.txt")) for d in (drop, inbox)):
                    break
                await asyncio.sleep(0.05)
        for folder, name in ((drop, "big.xml"), (inbox, "big.msg")):  # refused by the watcher, unread
            _body, reason = filed_as(folder, "failed", name)
            assert "The file is 102 bytes; this gateway accepts at most 100 bytes" in reason


class TestEhrFolder:
    def delivery(self, folder: Path) -> tuple[Any, Packet]:
        """The EHR folder transport and the packet the worker hands it for the GP's folder."""
        packet = Packet(
            b"<epikrise/>",
            "t-1",
            "7200101",
            "7102001",
            "application/xml",
            "EPIKRISE",
            destination=str(folder),
            reference="m-1",
            kind="epikrise-1.2",
        )
        return EhrFolder(TransportContext()).send, packet

    async def test_a_linked_ehr_folder_is_a_transport_error(self, tmp_path: Path) -> None:
        """The EHR's inbox replaced by a link: not entered, a transport error (retried), nothing written."""
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "gp-inbox").symlink_to(tmp_path / "elsewhere")
        ehr, claim = self.delivery(tmp_path / "gp-inbox")
        with pytest.raises(TransportError, match="symbolic link"):
            await ehr(claim)
        assert not list((tmp_path / "elsewhere").iterdir())

    async def test_an_ehr_file_is_never_overwritten(self, tmp_path: Path) -> None:
        """The same hand-over twice is one file; a different file or a link under that name is left alone."""
        inbox = tmp_path / "gp-inbox"
        ehr, claim = self.delivery(inbox)
        await ehr(claim)
        await ehr(claim)  # a retried hand-over of the same bytes
        [written] = list(inbox.iterdir())
        assert written.name == "epikrise-1.2-m-1.xml" and written.read_bytes() == b"<epikrise/>"
        written.write_bytes(b"<the EHR's own/>")
        with pytest.raises(TransportError, match="never overwrites"):
            await ehr(claim)
        assert written.read_bytes() == b"<the EHR's own/>"
        written.unlink()
        (tmp_path / "key").write_bytes(SECRET)
        written.symlink_to(tmp_path / "key")
        with pytest.raises(TransportError, match="never overwrites"):
            await ehr(claim)
        assert (tmp_path / "key").read_bytes() == SECRET and written.is_symlink()
        assert [p.name for p in inbox.iterdir()] == [written.name]  # no temporary left behind
