"""The replay harness: the SiO region simulated on loopback, every fixture sent from its sender.

Two real gateway processes: this hub (the 13 municipalities, the GP office, the legevakt) and a
simulated St. Olavs gateway (Orkdal sjukehus), each the other's remote party over the ``http`` adapter,
with CMS protection on and a shared dev PKI. Each valid fixture is handed to the API of the gateway
serving its sender and followed until every receiver has answered with an AppRec. Each broken fixture is
handed in the same way and must be refused with its code; it is then also pushed to the receiving gateway
as a peer that does not validate would send it (signed and encrypted), to show what the receiver answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapters.http import RECEIVING_PATH
from gateway.config import Settings
from gateway.registry import Certificates, Party, Register, dump_register
from gateway.security.devpki import init_dev_pki
from gateway.security.protection import build_sign_then_encrypt
from gateway.transport import Packet
from gateway.xml import parse

__all__ = ["Outcome", "Region", "launch_region", "mirror_regions", "replay", "stop_region", "wait_until_up"]

_SETTLED = {"acknowledged", "acknowledged-with-errors", "rejected", "dead", "overdue", "cancelled"}
# what a receiver cannot read as a KITH message is refused at the transport, not answered by AppRec
_UNREADABLE = {"T01", "T10"}


@dataclass
class Outcome:
    fixture: str
    kind: str
    sender: str
    receivers: list[str]
    expected: str  # "acknowledged" or the refusal code
    submitted: str = ""  # what the sender's gateway said
    receivers_said: dict[str, str] = field(default_factory=dict)  # receiver -> AppRec outcome
    latency_s: list[float] = field(default_factory=list)
    ok: bool = False
    note: str = ""


@dataclass
class Region:
    """The two gateways of the simulated region, as started processes."""

    work_dir: Path
    hub_url: str
    stolav_url: str
    token: str
    hub_register: Register
    stolav_register: Register
    settings: Settings
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) the gateway process ``name`` ("sio-hub" or "st-olavs") from its config."""
        folder = self.work_dir / name
        with open(folder / "gateway.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(folder / "gateway.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GATEWAY_LOG_FORMAT": "json"},
            )

    def url_for(self, her_id: str) -> str:
        """The gateway serving ``her_id``; a party nobody serves is taken to the hub."""
        party = self.hub_register.get(her_id)
        return self.stolav_url if party is not None and not party.local else self.hub_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_certs(party: Party, pki: Path | None, *, local: bool) -> Party:
    if pki is None:
        return party
    base = pki / party.her_id
    certs = Certificates(
        sign_cert=base / "sign.crt",
        enc_cert=base / "enc.crt",
        sign_key=base / "sign.key" if local else None,
        enc_key=base / "enc.key" if local else None,
    )
    return dataclasses.replace(party, certificates=certs)


def mirror_regions(
    register: Register, *, hub_endpoint: str, stolav_endpoint: str, adapter: str = "http", pki: Path | None = None
) -> tuple[Register, Register]:
    """The hub's register and the simulated St. Olavs gateway's: the same parties, local and remote
    swapped, each side's remote parties reached at the other's endpoint through ``adapter``."""
    hub, stolav = [], []
    for p in register:
        as_hub = dataclasses.replace(
            p, adapter=None if p.local else adapter, endpoint=None if p.local else stolav_endpoint
        )
        as_stolav = dataclasses.replace(
            p, local=not p.local, adapter=adapter if p.local else None, endpoint=hub_endpoint if p.local else None
        )
        hub.append(_with_certs(as_hub, pki, local=p.local))
        stolav.append(_with_certs(as_stolav, pki, local=not p.local))
    return Register(hub, name=register.name), Register(stolav, name=f"{register.name} (St. Olavs view)")


def _config(
    name: str,
    port: int,
    token: str,
    settings: Settings,
    pki: Path,
    protection: str,
    overrides: Mapping[str, Mapping[str, Any]],
) -> str:
    bundle = str(settings.schemas.bundle) if settings.schemas.bundle and settings.schemas.bundle.is_dir() else ""
    sections: dict[str, dict[str, Any]] = {
        "gateway": {"name": name, "data_dir": ".", "region": "region.toml"},
        "api": {"host": "127.0.0.1", "port": port},
        "schemas": {"bundle": bundle},
        "security": {"protection": protection, "trust_anchors": [str(pki / "ca.crt")], "crls": [str(pki / "ca.crl")]},
        "delivery": {"poll_interval_s": 0.2},
        "log": {"format": "json"},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
        lines.append("")
    lines += ["[[api.tokens]]", 'name = "replay"', f"token = {_toml(token)}", 'senders = ["*"]', "admin = true", ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch_region(
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    protection: str = "cms",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Region:
    """Write both gateways' configs and the shared dev PKI, and start both processes. ``overrides`` are
    config settings by section for both gateways (tests shorten leases and retry intervals with them)."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    pki = work_dir / "pki"
    init_dev_pki(
        dataclasses.replace(settings, gateway=dataclasses.replace(settings.gateway, data_dir=work_dir)), register
    )
    hub_port, stolav_port = _free_port(), _free_port()
    hub_register, stolav_register = mirror_regions(
        register,
        hub_endpoint=f"http://127.0.0.1:{hub_port}{RECEIVING_PATH}",
        stolav_endpoint=f"http://127.0.0.1:{stolav_port}{RECEIVING_PATH}",
        pki=pki,
    )
    token = secrets.token_urlsafe(24)
    region = Region(
        work_dir,
        f"http://127.0.0.1:{hub_port}",
        f"http://127.0.0.1:{stolav_port}",
        token,
        hub_register,
        stolav_register,
        settings,
    )
    for name, port, reg in (("sio-hub", hub_port, hub_register), ("st-olavs", stolav_port, stolav_register)):
        folder = work_dir / name
        folder.mkdir(exist_ok=True)
        (folder / "region.toml").write_text(dump_register(reg), encoding="utf-8")
        config = _config(name, port, token, settings, pki, protection, overrides or {})
        (folder / "gateway.toml").write_text(config, encoding="utf-8")
        region.processes.append(region.start(name))
    return region


async def wait_until_up(region: Region) -> None:
    async with aiohttp.ClientSession() as session:
        for url in (region.hub_url, region.stolav_url):
            await _wait_healthy(session, url, region)


async def _wait_healthy(session: aiohttp.ClientSession, url: str, region: Region, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in region.processes):
            raise RuntimeError(f"a gateway of the simulated region exited; see the logs in {region.work_dir}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout_s} s; see the logs in {region.work_dir}")


def stop_region(region: Region, timeout_s: float = 30) -> list[int]:
    """SIGTERM both gateways and wait; their exit codes."""
    for process in region.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in region.processes:
        try:
            codes.append(process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def replay(
    fixtures: Path,
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    timeout_s: float = 60,
    protection: str = "cms",
) -> list[Outcome]:
    """Run every fixture of ``fixtures/manifest.toml`` through the simulated region."""
    manifest = tomllib.loads((fixtures / "manifest.toml").read_text(encoding="utf-8"))["fixture"]
    documents = {entry["file"]: (fixtures / entry["file"]).read_bytes() for entry in manifest}
    region = launch_region(settings, register, work_dir, protection=protection)
    try:
        outcomes = asyncio.run(_drive(region, manifest, documents, timeout_s))
    finally:
        codes = stop_region(region)
    if any(codes):
        for outcome in outcomes:
            outcome.ok = False
            outcome.note += f" (a gateway exited with {codes})"
    return outcomes


async def _drive(
    region: Region, manifest: list[dict[str, Any]], documents: dict[str, bytes], timeout_s: float
) -> list[Outcome]:
    await wait_until_up(region)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {region.token}"}) as session:
        outcomes = [await _submit(session, region, documents[entry["file"]], entry) for entry in manifest]
        await _follow(session, region, outcomes, timeout_s)
        injector = _Injector(region)
        for outcome in outcomes:
            if outcome.expected != "acknowledged":
                await injector.push(session, documents[outcome.fixture], outcome)
    return outcomes


async def _submit(session: aiohttp.ClientSession, region: Region, document: bytes, entry: dict[str, Any]) -> Outcome:
    expected = "acknowledged" if entry["expect"] == "accepted" else entry["code"]
    outcome = Outcome(entry["file"], entry["kind"], entry["sender"], list(entry["receivers"]), expected)
    url = region.url_for(entry["sender"])
    async with session.post(f"{url}/v1/messages", data=document) as response:
        body = await response.json()
    if response.status in (200, 202):
        outcome.submitted = f"accepted {body['id']}"
    else:
        outcome.submitted = f"refused {body['error'].get('code') or body['error'].get('event')}"
        outcome.ok = body["error"].get("code") == expected
    return outcome


async def _follow(session: aiohttp.ClientSession, region: Region, outcomes: list[Outcome], timeout_s: float) -> None:
    """Poll every accepted message until each receiver's delivery is settled by an AppRec (or time runs out)."""
    waiting = [o for o in outcomes if o.submitted.startswith("accepted")]
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for outcome in list(waiting):
            message_id = outcome.submitted.split()[1]
            async with session.get(f"{region.url_for(outcome.sender)}/v1/messages/{message_id}") as response:
                view = await response.json()
            states = {d["receiver"]: d for d in view["deliveries"]}
            if all(d["state"] in _SETTLED for d in states.values()):
                created = view["created_at"]
                for receiver, d in states.items():
                    apprec = d["apprec"]
                    outcome.receivers_said[receiver] = (
                        f"{d['state']} (AppRec {apprec['status']})" if apprec else d["state"]
                    )
                    if apprec:
                        outcome.latency_s.append(_seconds_between(created, apprec["at"]))
                outcome.ok = (
                    all(d["state"] == "acknowledged" for d in states.values())
                    and set(states) == set(outcome.receivers)
                    and outcome.expected == "acknowledged"
                )
                waiting.remove(outcome)
        await asyncio.sleep(0.2)
    for outcome in waiting:
        outcome.note = "no AppRec within the time limit"


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


class _Injector:
    """Pushes a broken fixture to the receiving gateway as a peer that does not validate would."""

    def __init__(self, region: Region) -> None:
        union = Register(
            [
                dataclasses.replace(
                    p,
                    local=True,
                    certificates=_with_certs(p, region.work_dir.resolve() / "pki", local=True).certificates,
                )
                for p in region.hub_register
            ],
            name=region.hub_register.name,
        )
        settings = dataclasses.replace(
            region.settings,
            gateway=dataclasses.replace(region.settings.gateway, data_dir=region.work_dir.resolve()),
        )
        self.region = region
        self.protection = build_sign_then_encrypt(settings, union)

    async def push(self, session: aiohttp.ClientSession, body: bytes, outcome: Outcome) -> None:
        """To every receiver the fixture names - each answers for itself, the copy receivers too."""
        for receiver in outcome.receivers:
            said, fits = await self._push_to(session, body, outcome, receiver)
            outcome.receivers_said[receiver] = said
            outcome.ok = outcome.ok and fits

    async def _push_to(
        self, session: aiohttp.ClientSession, body: bytes, outcome: Outcome, receiver: str
    ) -> tuple[str, bool]:
        if self.region.hub_register.get(receiver) is None:
            # nobody can encrypt to a party without a certificate: no peer could send this one on
            return "not sent on: no certificate for an unknown receiver", outcome.expected == "E21"
        url = self.region.url_for(receiver)
        packet = Packet(
            body=self.protection.protect(body, sender_her=outcome.sender, receiver_her=receiver),
            message_id=str(uuid.uuid4()),
            from_her=outcome.sender,
            to_her=receiver,
            content_type=self.protection.content_type,
            subject=_type_of(body),
        )
        async with session.post(f"{url}{RECEIVING_PATH}", data=packet.body, headers=packet.headers()) as response:
            answer = await response.json()
        if response.status != 202:
            condition = answer["error"].get("condition")
            return f"refused at transport: {condition}", (
                outcome.expected in _UNREADABLE and answer["error"].get("code") == outcome.expected
            )
        async with session.get(f"{url}/v1/messages/{answer['id']}") as response:
            view = await response.json()
        queued = any(t["event"] == "apprec.queued" for t in view["trace"])
        code = (view["error"] or {}).get("code")
        said = f"{view['state']} {code or ''}".strip() + (" (AppRec 2 sent)" if queued else " (no AppRec)")
        if outcome.expected == "E21":
            return said, view["state"] == "misaddressed"
        return said, view["state"] == "rejected" and code == outcome.expected and queued


def _type_of(body: bytes) -> str:
    with contextlib.suppress(Exception):
        root = parse(body).root
        for element in root.iter():
            if isinstance(element.tag, str) and element.tag.endswith("}Type"):
                return str(element.get("V", ""))
    return ""


def latency_summary(outcomes: list[Outcome]) -> tuple[float, float] | None:
    """Median and p99 of the AppRec round trip over all receivers (seconds)."""
    values = sorted(v for o in outcomes for v in o.latency_s)
    if not values:
        return None
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return statistics.median(values), p99
