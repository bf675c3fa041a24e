"""``gateway replay --via http``: the fixtures through the two-gateway region of replay_http_region.py.

Each fixture goes to the API of the gateway serving its sender (the hub, or the simulated St. Olavs
gateway) and is followed until every receiver has answered with an AppRec. A broken fixture must be
refused there with its code; it is then also pushed to each receiving gateway as a peer that does not
validate would send it (signed and encrypted), to show what the receiver answers: a negative AppRec with
the code, a transport refusal for what is unreadable, or "misaddressed".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from pathlib import Path

import aiohttp

from adapters.http import RECEIVING_PATH
from gateway.config import Settings
from gateway.registry import Register
from gateway.security.protection import build_sign_then_encrypt
from gateway.testing.replay_follow import UNREADABLE, Fixture, Outcome, follow, submit
from gateway.testing.replay_http_region import Region, launch_region, stop_region, wait_until_up, with_certs
from gateway.transport import Packet
from gateway.xml import parse

__all__ = ["replay_http"]


def replay_http(
    fixtures: list[Fixture],
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    timeout_s: float,
    protection: str,
) -> tuple[list[Outcome], list[int]]:
    """Start the region, run every fixture through it, stop it; the outcomes and the exit codes."""
    region = launch_region(settings, register, work_dir, protection=protection)
    try:
        outcomes = asyncio.run(_drive(region, fixtures, timeout_s))
    finally:
        codes = stop_region(region)
    return outcomes, codes


async def _drive(region: Region, fixtures: list[Fixture], timeout_s: float) -> list[Outcome]:
    await wait_until_up(region)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {region.token}"}) as session:
        outcomes = [await submit(session, region.url_for(f.sender), f) for f in fixtures]
        await follow(session, region.url_for, outcomes, timeout_s)
        injector = _Injector(region)
        for fixture, outcome in zip(fixtures, outcomes, strict=True):
            if outcome.expected != "acknowledged":
                await injector.push(session, fixture.document, outcome)
    return outcomes


class _Injector:
    """Pushes a broken fixture to the receiving gateway as a peer that does not validate would."""

    def __init__(self, region: Region) -> None:
        pki = region.work_dir.resolve() / "pki"
        union = Register(
            [
                dataclasses.replace(p, local=True, certificates=with_certs(p, pki, local=True).certificates)
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
                outcome.expected in UNREADABLE and answer["error"].get("code") == outcome.expected
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
