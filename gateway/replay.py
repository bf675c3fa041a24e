"""The replay harness: the SiO region simulated on loopback, every fixture of a manifest sent from its
sender and followed to its end state - the proof that the region's messages go through as they would live.

Two ways to run the region, both with real ``gateway`` processes:

* ``via="nhn"`` (the default: how the region runs now) - this hub, whose St. Olavs parties are EDI parties
  reached through NHN's Meldingstjener (``edi2``), beside a local NHN (``gateway sim nhn``) whose scripted
  EDI peers play St. Olavs (gateway/testing/replay_nhn.py), and - when RabbitMQ is installed - a local
  Tjenestebuss (``gateway sim helsenorge``) on which a Helsenorge.Messaging-like peer plays Helsenorge;
* ``via="http"`` - this hub and a simulated St. Olavs *gateway*, each the other's remote party over the
  ``http`` adapter with CMS: the gateway-to-gateway transport, for peers that run this gateway
  (gateway/testing/replay_http.py).

Both judge every fixture by the same rules and report the same way (gateway/testing/replay_follow.py).
The two-gateway region's launcher is re-exported here, where the crash proof and the benchmarks import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gateway.config import Settings
from gateway.registry import Register
from gateway.testing.replay_follow import Outcome, latency_summary, read_manifest
from gateway.testing.replay_http import replay_http
from gateway.testing.replay_http_region import Region, launch_region, mirror_regions, stop_region, wait_until_up
from gateway.testing.replay_nhn import replay_nhn

__all__ = [
    "VIAS",
    "Outcome",
    "Region",
    "Via",
    "latency_summary",
    "launch_region",
    "mirror_regions",
    "replay",
    "stop_region",
    "wait_until_up",
]

Via = Literal["nhn", "http"]
VIAS: tuple[Via, ...] = ("nhn", "http")


def replay(
    fixtures: Path,
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    via: Via = "nhn",
    timeout_s: float = 60,
    protection: str = "cms",
) -> list[Outcome]:
    """Run every fixture of ``fixtures/manifest.toml`` through the simulated region, ``via`` NHN or http.
    ``timeout_s`` bounds the wait for answers once everything is sent. A process of the region that does
    not exit cleanly fails every outcome: what it did may not be what the report says."""
    run = replay_nhn if via == "nhn" else replay_http
    outcomes, codes = run(
        read_manifest(fixtures), settings, register, work_dir, timeout_s=timeout_s, protection=protection
    )
    if any(codes):
        for outcome in outcomes:
            outcome.ok = False
            outcome.note += f" (a process of the region exited with {codes})"
    return outcomes
