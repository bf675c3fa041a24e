"""The replay's processes on loopback: a gateway's config file, free ports, starting a ``gateway`` command,
waiting until it answers, stopping it.

Both ways the replay runs the region (two gateways over http, or the hub beside a local NHN) start real
processes, so that what is measured and checked is the gateway as it runs in production - its own event
loop, its own SQLite file, its own log - not a test double of it. What the two share is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import Settings

__all__ = ["free_port", "gateway_config", "start", "stop", "toml_value", "wait_answering"]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so that replays and tests can run side by side."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(
    name: str,
    port: int,
    token: str,
    settings: Settings,
    pki: Path,
    protection: str,
    overrides: Mapping[str, Mapping[str, Any]],
) -> str:
    """A gateway.toml for a replay gateway whose data dir is the folder the file is written to: this
    API port, the schema bundle of ``settings``, the dev PKI at ``pki``, a short poll interval (the replay
    waits on it), JSON logs, and one admin token for every sender. ``overrides`` are settings by section
    (``"adapters.edi2"`` names a sub-table)."""
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
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    lines += [
        "[[api.tokens]]",
        'name = "replay"',
        f"token = {toml_value(token)}",
        'senders = ["*"]',
        "admin = true",
        "",
    ]
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """``value`` as TOML: booleans, numbers, strings and (nested) lists - all a replay config holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def start(args: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Run ``gateway <args>`` with this Python, JSON logs appended to ``log_file`` (stdout and stderr)."""
    with open(log_file, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GATEWAY_LOG_FORMAT": "json"},
        )


async def wait_answering(
    urls: Sequence[str], processes: Sequence[subprocess.Popen[bytes]], work_dir: Path, timeout_s: float = 120
) -> None:
    """Wait until every URL answers 200 to a GET. Raises ``RuntimeError`` naming where the logs are when a
    process exits first or time runs out - a bound for a stuck start, generous for a busy machine."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        for url in urls:
            while True:
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"a process of the simulated region exited; see the logs in {work_dir}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not answer within {timeout_s} s; see the logs in {work_dir}")
                await asyncio.sleep(0.2)


def stop(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30) -> list[int]:
    """SIGTERM every process, then wait for each (killing one that outlives ``timeout_s``); their exit codes."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes
