"""What the replay makes of each fixture: the manifest read, a fixture handed to a gateway's API as its
sender's EHR would, and the message followed through that API until every receiver has answered.

Both ways of running the region (``--via nhn``, ``--via http``) hand the fixtures of local senders to a
gateway the same way and judge them by the same rule - the message's own state as the sending gateway
reports it - so their reports can be read side by side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

__all__ = [
    "SETTLED",
    "UNREADABLE",
    "Fixture",
    "Outcome",
    "follow",
    "latency_summary",
    "read_manifest",
    "seconds_between",
    "settle",
    "submit",
]

#: The delivery states in which a receiver has answered (or never will).
SETTLED = {"acknowledged", "acknowledged-with-errors", "rejected", "dead", "overdue", "cancelled"}
#: What a receiver cannot read as a KITH message is refused at the transport, not answered by AppRec.
UNREADABLE = {"T01", "T10"}


@dataclass(frozen=True)
class Fixture:
    """One ``[[fixture]]`` of the manifest, with its bytes."""

    file: str
    kind: str
    sender: str
    receivers: tuple[str, ...]
    expected: str  # "acknowledged", or the code it must be refused with
    document: bytes


@dataclass
class Outcome:
    fixture: str
    kind: str
    sender: str
    receivers: list[str]
    expected: str  # "acknowledged" or the refusal code
    submitted: str = ""  # what the sender's side said: "accepted", "refused T01"
    reference: str = ""  # the id the sender's side gave it: the gateway's message id, or NHN's
    receivers_said: dict[str, str] = field(default_factory=dict)  # receiver -> its answer
    latency_s: list[float] = field(default_factory=list)
    ok: bool = False
    note: str = ""

    @classmethod
    def of(cls, fixture: Fixture) -> Outcome:
        return cls(fixture.file, fixture.kind, fixture.sender, list(fixture.receivers), fixture.expected)


def read_manifest(fixtures: Path) -> list[Fixture]:
    """Every fixture of ``fixtures/manifest.toml``, in the manifest's order."""
    manifest = tomllib.loads((fixtures / "manifest.toml").read_text(encoding="utf-8"))["fixture"]
    return [
        Fixture(
            entry["file"],
            entry["kind"],
            entry["sender"],
            tuple(entry["receivers"]),
            "acknowledged" if entry["expect"] == "accepted" else entry["code"],
            (fixtures / entry["file"]).read_bytes(),
        )
        for entry in manifest
    ]


async def submit(session: aiohttp.ClientSession, url: str, fixture: Fixture) -> Outcome:
    """Hand the fixture to the gateway at ``url`` as its sender's EHR would. A refusal settles the outcome
    here (it fits when the code is the expected one); an accepted message is followed with :func:`settle`."""
    outcome = Outcome.of(fixture)
    async with session.post(f"{url}/v1/messages", data=fixture.document) as response:
        body = await response.json()
    if response.status in (200, 202):
        outcome.submitted, outcome.reference = "accepted", str(body["id"])
    else:
        outcome.submitted = f"refused {body['error'].get('code') or body['error'].get('event')}"
        outcome.ok = body["error"].get("code") == fixture.expected
    return outcome


async def settle(session: aiohttp.ClientSession, url: str, outcome: Outcome) -> bool:
    """Look once at an accepted message in the gateway at ``url``; once every receiver's delivery is
    settled, fill in what each answered and whether that fits, and say True."""
    async with session.get(f"{url}/v1/messages/{outcome.reference}") as response:
        view = await response.json()
    states = {d["receiver"]: d for d in view["deliveries"]}
    if not all(d["state"] in SETTLED for d in states.values()):
        return False
    for receiver, d in states.items():
        apprec = d["apprec"]
        outcome.receivers_said[receiver] = f"{d['state']} (AppRec {apprec['status']})" if apprec else d["state"]
        if apprec:
            outcome.latency_s.append(seconds_between(view["created_at"], apprec["at"]))
    outcome.ok = (
        all(d["state"] == "acknowledged" for d in states.values())
        and set(states) == set(outcome.receivers)
        and outcome.expected == "acknowledged"
    )
    return True


async def follow(
    session: aiohttp.ClientSession, url_for: Callable[[str], str], outcomes: list[Outcome], timeout_s: float
) -> None:
    """Poll every accepted message (in the gateway ``url_for(sender)``) until each is settled or time runs
    out; what is still open then is noted as such."""
    waiting = [o for o in outcomes if o.submitted == "accepted"]
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for outcome in list(waiting):
            if await settle(session, url_for(outcome.sender), outcome):
                waiting.remove(outcome)
        await asyncio.sleep(0.2)
    for outcome in waiting:
        outcome.note = "no AppRec within the time limit"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def latency_summary(outcomes: list[Outcome]) -> tuple[float, float] | None:
    """Median and p99 of the AppRec round trip over all receivers (seconds)."""
    values = sorted(v for o in outcomes for v in o.latency_s)
    if not values:
        return None
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return statistics.median(values), p99
