"""Drop folders: atomic writes, each file taken exactly once, done/ or failed/ with a reason file.

The hardening against what the other side of a shared folder may do (links, FIFOs, half-written and
over-long files, same names twice) is in test_folder_safety.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.base import InboundResult, Packet, TransportContext
from adapters.folder import FolderTransport, FolderWatcher, atomic_write
from gateway.config import DropFolderSettings
from gateway.errors import ConfigError
from gateway.service import Gateway

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
