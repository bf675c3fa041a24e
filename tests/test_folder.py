"""Drop folders: atomic writes, each file taken exactly once, done/ or failed/ with a reason file.

The hardening against what the other side of a shared folder may do (links, FIFOs, half-written and
over-long files, same names twice) is in test_folder_safety.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.folder import FolderTransport, FolderWatcher, atomic_write
from gateway.config import PROJECT_ROOT, DropFolderSettings
from gateway.errors import ConfigError
from gateway.service import Gateway
from gateway.transport import InboundResult, Packet, TransportContext

from .region import fixture_bytes, settings_for

FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"


def watcher(folder: Path, handler: Any, **options: Any) -> FolderWatcher:
    """A watcher that takes a file at first sight (no quiet period) unless told otherwise."""
    options.setdefault("settle_s", 0.0)
    return FolderWatcher(folder, handler, **options)


def filed(folder: Path, sub: str) -> list[tuple[str, Path, str]]:
    """What is in done/ or failed/: (original name, the file, its .id or .reason.txt), by original name.

    Files there have gateway-made names; the file beside each one says which dropped file it was.
    """
    sidecar = ".id" if sub == "done" else ".reason.txt"
    found = []
    for note in (folder / sub).glob(f"*{sidecar}"):
        text = note.read_text(encoding="utf-8")
        original = re.search(r"^original name: (.*)$", text, re.M)
        assert original, text
        stem = note.name.removesuffix(sidecar)
        [body] = [p for p in (folder / sub).iterdir() if p.name.startswith(stem) and p != note and p.suffix != ".json"]
        found.append((original[1], body, text))
    return sorted(found, key=lambda entry: (entry[0], entry[1].name))


def filed_as(folder: Path, sub: str, original: str) -> tuple[Path, str]:
    """The one file in done/ or failed/ that was dropped as ``original``, and its .id or reason text."""
    [(_, body, text)] = [entry for entry in filed(folder, sub) if entry[0] == original]
    return body, text


class TestFolderAdapter:
    async def test_send_writes_body_and_metadata_atomically(self, tmp_path: Path) -> None:
        """A packet lands as <id>.json + <id>.msg, with no temporary file left behind."""
        transport = FolderTransport(TransportContext())
        packet = Packet(
            b"<x/>",
            "m-1",
            "7100101",
            "7200101",
            "application/xml",
            "DIALOG_HELSEFAGLIG",
            destination=str(tmp_path / "out"),
        )
        await transport.send(packet)
        names = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert names == ["m-1.json", "m-1.msg"]
        assert json.loads((tmp_path / "out" / "m-1.json").read_text())["X-From-Her-Id"] == "7100101"

    async def test_each_file_taken_once_and_sorted_out(self, tmp_path: Path) -> None:
        """Two scanners racing take every file exactly once; refused files get a reason beside them."""
        seen: list[str] = []

        async def handler(packet: Packet) -> InboundResult:
            seen.append(packet.message_id)
            await asyncio.sleep(0)
            if packet.body == b"bad":
                return InboundResult(False, code="T01", event="message.not_well_formed", message="not XML")
            return InboundResult(True, reference=f"ref-{packet.message_id}")

        for i in range(20):
            atomic_write(tmp_path, f"f{i:02}.xml", b"bad" if i == 7 else b"<ok/>")
        a, b = watcher(tmp_path, handler), watcher(tmp_path, handler)
        await asyncio.gather(a.scan(), b.scan())
        assert sorted(seen) == [f"f{i:02}" for i in range(20)]
        assert len(list((tmp_path / "done").glob("*.xml"))) == 19
        body, reason = filed_as(tmp_path, "failed", "f07.xml")
        assert body.suffix == ".xml" and body.read_bytes() == b"bad" and reason.startswith("T01")
        body, ident = filed_as(tmp_path, "done", "f00.xml")
        assert body.read_bytes() == b"<ok/>" and ident.splitlines()[0] == "ref-f00"
        assert not list((tmp_path / "processing").iterdir())

    async def test_temporary_problem_leaves_the_file_for_later(self, tmp_path: Path) -> None:
        """A file whose handling must wait goes back to the folder, and files left in processing/ come back."""

        async def later(_packet: Packet) -> InboundResult:
            return InboundResult(False, retry_later=True)

        atomic_write(tmp_path, "a.xml", b"<a/>")
        folder = watcher(tmp_path, later)
        assert await folder.scan() == 0 and (tmp_path / "a.xml").read_bytes() == b"<a/>"
        (tmp_path / "a.xml").rename(tmp_path / "processing" / "a.xml")  # as a killed process would leave it
        await folder.start()
        await folder.stop()
        assert (tmp_path / "a.xml").exists() and not list((tmp_path / "processing").iterdir())


class Blocking:
    """A handler that holds on to the first file it is given until released; it accepts everything."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, packet: Packet) -> InboundResult:
        self.seen.append(packet.body)
        self.entered.set()
        await self.release.wait()
        return InboundResult(True, reference=f"ref-{len(self.seen)}")


async def eventually(condition: Any, what: str) -> None:
    """Wait for an outcome, not for a time: a generous bound for a busy machine."""
    for _ in range(1200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


# A watcher in a process of its own that claims the one file dropped and then hangs in the handler.
_HANGING_WATCHER = """
import asyncio, sys
from pathlib import Path
from adapters.folder_watch import FolderWatcher

async def main() -> None:
    folder = Path(sys.argv[1])

    async def hang(_packet):
        (folder.parent / "entered").touch()
        await asyncio.Event().wait()

    await FolderWatcher(folder, hang, settle_s=0, poll_interval_s=0.01).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


class TestClaimsOfOtherWatchers:
    """Several gateway processes may watch one folder: a claim is put back only when its owner is gone."""

    def test_flock_locks_exclude_each_other_within_one_process(self, tmp_path: Path) -> None:
        """flock belongs to the open file description: two opens in one process conflict, and closing the
        holder lets the other in - so two watchers in one process are told apart as two processes are."""
        first = os.open(tmp_path / "lock", os.O_RDONLY | os.O_CREAT, 0o644)
        second = os.open(tmp_path / "lock", os.O_RDONLY)
        try:
            fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(first)
            first = -1
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            for fd in (first, second):
                if fd >= 0:
                    os.close(fd)

    async def test_a_second_watcher_leaves_a_live_claim_alone(self, tmp_path: Path) -> None:
        """A watcher starting (and scanning) while another one handles a file does not put that file back:
        it is handed over once, and filed in done/ whole."""
        slow, other = Blocking(), Blocking()
        other.release.set()
        atomic_write(tmp_path, "a.xml", b"<a/>")
        first = watcher(tmp_path, slow, poll_interval_s=0.01)
        second = watcher(tmp_path, other, poll_interval_s=3600)
        try:
            await first.start()
            await eventually(lambda: slow.entered.is_set(), "the first watcher took the file")
            await second.start()
            assert await second.scan() == 0
            assert not (tmp_path / "a.xml").exists() and not other.seen
            slow.release.set()
            await eventually(lambda: any((tmp_path / "done").glob("*.id")), "the first watcher filed it")
        finally:
            slow.release.set()
            await first.stop()
            await second.stop()
        assert slow.seen == [b"<a/>"] and not other.seen
        body, ident = filed_as(tmp_path, "done", "a.xml")
        assert body.read_bytes() == b"<a/>" and ident.startswith("ref-1\n")
        assert all(p.stat().st_size > 0 for p in (tmp_path / "done").iterdir())
        assert len(list((tmp_path / "done").iterdir())) == 2
        assert not list((tmp_path / "processing").iterdir())

    async def test_a_stopped_watchers_claim_is_taken_up_by_the_next_scan(self, tmp_path: Path) -> None:
        """A watcher stopped in the middle of a file lets go of its lock; another watcher takes the file up
        at its next scan - not only when it starts."""
        slow, other = Blocking(), Blocking()
        other.release.set()
        atomic_write(tmp_path, "a.xml", b"<a/>")
        first = watcher(tmp_path, slow, poll_interval_s=0.01)
        try:
            await first.start()
            await eventually(lambda: slow.entered.is_set(), "the first watcher took the file")
        finally:
            await first.stop()  # cancelled in the handler: the claim stays in processing/
        assert not (tmp_path / "a.xml").exists() and list((tmp_path / "processing").iterdir())
        assert await watcher(tmp_path, other).scan() == 1
        assert other.seen == [b"<a/>"]
        assert filed_as(tmp_path, "done", "a.xml")[0].read_bytes() == b"<a/>"
        assert not list((tmp_path / "processing").iterdir())

    async def test_a_dead_process_claim_is_taken_up_at_start(self, tmp_path: Path) -> None:
        """A gateway killed (SIGKILL) in the middle of a file: the next one puts it back at its start, without
        waiting, and removes the dead one's lock file."""
        drop = tmp_path / "drop"
        atomic_write(drop, "a.xml", b"<a/>")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HANGING_WATCHER, str(drop), cwd=PROJECT_ROOT
        )
        try:
            await eventually(lambda: (tmp_path / "entered").exists() or child.returncode is not None, "claimed")
            assert child.returncode is None, "the watcher process ended by itself"
        finally:
            child.kill()
            await child.wait()
        left = sorted(p.name for p in (drop / "processing").iterdir())
        assert len(left) == 2 and any(name.endswith("~a.xml") for name in left), left
        taker = Blocking()
        taker.release.set()
        fresh = watcher(drop, taker)
        await fresh.start()
        assert (drop / "a.xml").read_bytes() == b"<a/>"  # back at once, before any scan
        [lock] = [p.name for p in (drop / "processing").iterdir()]  # the dead one's lock file is gone
        assert re.fullmatch(r"watcher-[0-9a-f]{16}\.lock", lock) and lock not in left
        await fresh.stop()
        assert not list((drop / "processing").iterdir())


class TestDropFolderSubmission:
    async def test_ehr_drop_folder_submits_for_its_senders(self, tmp_path: Path) -> None:
        """An EHR drops XML in its folder; it is accepted like an API submission, or refused with a reason."""
        drop = tmp_path / "drop-hitra"
        settings = settings_for(tmp_path / "data", security={"protection": "none"})
        settings = dataclasses.replace(
            settings, drop_folders=(DropFolderSettings(drop, ("7100201",), "hitra-folder", 0.05, settle_s=0.1),)
        )
        atomic_write(drop, "foresporsel.xml", fixture_bytes(FORESPORSEL))
        atomic_write(drop, "broken.xml", fixture_bytes("broken/bad-msgid.xml"))
        async with Gateway(settings) as gateway:
            gateway.start_background()
            for _ in range(1200):  # outcomes, not timing: a generous bound for a busy machine
                if len(list((drop / "done").glob("*.id"))) + len(list((drop / "failed").glob("*.reason.txt"))) == 2:
                    break
                await asyncio.sleep(0.05)
            _body, ident = filed_as(drop, "done", "foresporsel.xml")
            view = await gateway.store.get(ident.splitlines()[0])
            assert view is not None and view.message.client == "hitra-folder"
        assert filed_as(drop, "failed", "broken.xml")[1].startswith("E10")


class TestBadFiles:
    async def test_unreadable_metadata_goes_to_failed(self, tmp_path: Path) -> None:
        """A packet whose metadata does not read lands in failed/ with a reason - never stuck in processing/."""

        async def handler(_packet: Packet) -> InboundResult:
            raise AssertionError("must not be called")

        atomic_write(tmp_path, "p.json", b"{not json")
        atomic_write(tmp_path, "p.msg", b"x")
        assert await watcher(tmp_path, handler).scan() == 1
        body, reason = filed_as(tmp_path, "failed", "p.msg")
        assert body.suffix == ".msg" and body.with_suffix(".json").read_bytes() == b"{not json"
        assert not list((tmp_path / "processing").iterdir())
        assert "unreadable packet metadata" in reason and "metadata: p.json" in reason

    @pytest.mark.parametrize(
        ("metadata", "why"),
        [
            (b"[" * 60000, "nested too deeply"),  # RecursionError in json.loads
            (b'{"a":' * 13000, "nested too deeply"),
            (b" " * (64 * 1024) + b"{}", "at most 65536 bytes"),  # over the bound: refused unread
            (b"\xff\xfe\x00\xd8{}", "unreadable packet metadata"),  # not UTF-8, nor UTF-16
            (b"[" * 500 + b"]" * 500, "not a JSON object"),
            (b"1" * 5000, "unreadable packet metadata"),  # an integer too long to convert
        ],
        ids=["deep-array", "deep-object", "oversize", "not-text", "a-list", "long-number"],
    )
    async def test_hostile_metadata_goes_to_failed(self, tmp_path: Path, metadata: bytes, why: str) -> None:
        """Metadata built to break the parser (deep nesting, size, bytes) is refused like any unreadable
        metadata: the pair lands in failed/ with a reason, nothing stays in processing/, the scan goes on."""

        async def handler(_packet: Packet) -> InboundResult:
            raise AssertionError("must not be called")

        atomic_write(tmp_path, "p.json", metadata)
        atomic_write(tmp_path, "p.msg", b"<x/>")
        folder = watcher(tmp_path, handler)
        assert await folder.scan() == 1
        assert await folder.scan() == 0
        body, reason = filed_as(tmp_path, "failed", "p.msg")
        assert body.read_bytes() == b"<x/>" and body.with_suffix(".json").read_bytes() == metadata
        assert reason.startswith("-\tfolder.bad_metadata\t-\nunreadable packet metadata") and why in reason
        assert not list((tmp_path / "processing").iterdir())
        assert sorted(os.listdir(tmp_path)) == ["done", "failed", "processing"]

    async def test_handler_crash_puts_the_file_back(self, tmp_path: Path) -> None:
        """An unexpected failure while handling a file returns it to the folder for the next scan."""

        async def handler(_packet: Packet) -> InboundResult:
            raise RuntimeError("boom")

        atomic_write(tmp_path, "a.xml", b"<a/>")
        assert await watcher(tmp_path, handler).scan() == 0
        assert (tmp_path / "a.xml").exists()

    async def test_drop_folder_must_name_its_senders(self, tmp_path: Path) -> None:
        """A drop folder without senders is refused at start (it fails closed, like a token)."""
        settings = settings_for(tmp_path / "data", security={"protection": "none"})
        settings = dataclasses.replace(settings, drop_folders=(DropFolderSettings(tmp_path / "drop"),))
        async with Gateway(settings) as gateway:
            with pytest.raises(ConfigError, match="lists no senders"):
                gateway.start_background()
