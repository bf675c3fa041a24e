"""Real processes for end-to-end proofs over NHN: a `gateway sim nhn` and a `gateway serve` hub pointed at
it, each with a config written into the test's tmp dir on free loopback ports, and a reader that asks the
simulator (as the hub's own HelseID client) what it knows. Not a test module.

The configs are made from the checked-in ones (config/gateway.toml, the SiO register) with only what a
test must change: where the data lives, the ports, the edi2 adapter's URLs and receive mode. That way the
processes under test are the gateway a deployment runs, not a test build of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from adapters.edi2.msh import MshClient, SentStatus
from adapters.helseid.client import HelseIdClient
from adapters.helseid.dpop import SigningKey
from gateway.config import PROJECT_ROOT
from gateway.registry import Register, dump_register, load_register
from gateway.testing.replay_processes import free_port, start, stop, toml_value, wait_answering

CLIENT_ID = "sio-gateway"
REGION = PROJECT_ROOT / "config" / "sio-region.toml"
SIM_UP_S = 60.0  # bounds for a process that never comes up, not start-up times to meet
HUB_UP_S = 120.0


def nhn_register() -> Register:
    """The SiO register with every remote party reached through NHN (``edi2``): St. Olavs, and Helsenorge,
    which the embedded default reaches over the Tjenestebuss (tests/amqp has that)."""
    base = load_register(REGION)
    return base.replaced([dataclasses.replace(p, adapter="edi2", endpoint=None) for p in base.remote_parties])


def local_her_ids() -> list[str]:
    """The SiO parties the hub serves: the simulator's API users and the HER-ids NHN's log is read for."""
    return [p.her_id for p in load_register(REGION).local_parties]


def toml_text(data: Mapping[str, Any]) -> str:
    """A config as TOML: tables (nested ones as dotted names) and arrays of tables (lists of dicts)."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping) and not _tables(v)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for key, value in values.items():
            if isinstance(value, Mapping):
                table(f"{name}.{key}", value)
            elif _tables(value):
                for item in value:
                    lines.append(f"[[{name}.{key}]]")
                    lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
                    lines.append("")

    for name, values in data.items():
        if _tables(values):
            for item in values:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
                lines.append("")
        else:
            table(name, values)
    return "\n".join(lines)


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


@dataclass(frozen=True)
class Ports:
    api: int
    msh: int
    helseid: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())

    @property
    def msh_url(self) -> str:
        return f"http://127.0.0.1:{self.msh}"

    @property
    def helseid_url(self) -> str:
        return f"http://127.0.0.1:{self.helseid}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api}"


def write_hub_config(
    path: Path, data_dir: Path, ports: Ports, *, edi2: Mapping[str, Any], **sections: Mapping[str, Any]
) -> Path:
    """config/gateway.toml as a hub in ``data_dir`` on ``ports``: its relative paths made absolute (the
    register, the schema bundle as the default config names it), ``edi2`` added to ``[adapters.edi2]``
    (pointing at the simulator), ``sections`` added to theirs."""
    source = PROJECT_ROOT / "config" / "gateway.toml"
    config: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    region = path.parent / "region.toml"
    region.write_text(dump_register(nhn_register()), encoding="utf-8")
    config["gateway"].update(data_dir=str(data_dir), region=str(region))
    config["api"].update(host="127.0.0.1", port=ports.api)
    bundle = config.get("schemas", {}).get("bundle")
    if bundle:
        config["schemas"]["bundle"] = str((source.parent / bundle).resolve())
    config["adapters"]["edi2"].update(base_url=ports.msh_url, helseid_url=ports.helseid_url, **edi2)
    config["adapters"].pop("amqp", None)  # no bus here: every remote party is reached through NHN
    config["log"] = {"format": "json", "level": "info"}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path.write_text(toml_text(config), encoding="utf-8")
    return path


def write_sim_config(
    path: Path, ports: Ports, client_key: Path, peers: Sequence[Mapping[str, Any]], **msh: Any
) -> Path:
    """A `gateway sim nhn` config: the SiO local parties as API users, the fake HelseID with the hub's
    client registered for them with the key the dev PKI made, and ``peers`` as EDI users."""
    her_ids = local_her_ids()
    config = {
        "server": {"host": "127.0.0.1", "port": ports.msh},
        "msh": {"api_users": her_ids, "tick_seconds": 0.1, **msh},
        "helseid": {
            "port": ports.helseid,
            "client": [{"client_id": CLIENT_ID, "key_file": str(client_key), "her_ids": her_ids}],
        },
        "peer": list(peers),
    }
    path.write_text(toml_text(config), encoding="utf-8")
    return path


def pki_init(config: Path) -> None:
    """`gateway pki init`: the dev PKI under the hub's data dir, with the HelseID client key."""
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "pki", "init", "--config", str(config)],
        check=True,
        capture_output=True,
    )


def start_sim(config: Path, client_key: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gateway sim nhn` as `./dev run` starts it: the HelseID client's key given with ``--client-key``."""
    return start(["sim", "nhn", "--config", str(config), "--client-key", str(client_key)], log)


def start_hub(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gateway serve`; its log lines are appended to ``log`` across restarts."""
    return start(["serve", "--config", str(config)], log)


async def wait_up(
    process: subprocess.Popen[bytes], urls: Sequence[str], *, what: str, within_s: float, logs: Path
) -> None:
    """Until each URL answers 200; fails at once if the process exits, or after ``within_s`` (stuck)."""
    try:
        await wait_answering(urls, [process], logs, timeout_s=within_s)
    except RuntimeError as exc:
        raise AssertionError(f"{what} is not up: {exc}") from None


def terminate(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int:
    """SIGTERM and its exit code; a process that does not stop is killed and reported as -9."""
    (code,) = stop([process], timeout_s)
    return code


class NhnReader:
    """What the simulator knows, asked through NHN's own API as the hub's HelseID client (the same client
    id and key: the HER-ids are locked to it). Read-only: statuses and the notification log."""

    def __init__(self, ports: Ports, key_file: Path, session: aiohttp.ClientSession) -> None:
        helseid = HelseIdClient(ports.helseid_url, CLIENT_ID, SigningKey.from_file(key_file), session=session)
        self.msh = MshClient(ports.msh_url, helseid, session=session, source_system="edi2 crash test")

    async def last_offset(self, her_ids: Sequence[str]) -> tuple[int, list[tuple[str, str]]]:
        """The last offset of the log for ``her_ids`` (0 when empty), and every (type, message id) in it."""
        offset, seen = 0, []
        while page := await self.msh.notifications(her_ids, offset=offset, count=1000):
            offset = page[-1].offset
            seen += [(n.type, n.related_message_id) for n in page]
        return offset, seen

    async def statuses(self, message_ids: Sequence[str], receiver: str) -> dict[str, SentStatus | None]:
        """NHN message id -> what NHN says of ``receiver``'s copy: its transport state (Acknowledged once
        the receiver marked it downloaded) and the AppRec it answered with."""
        limit = asyncio.Semaphore(8)

        async def one(message_id: str) -> tuple[str, SentStatus | None]:
            async with limit:
                statuses = await self.msh.status(message_id)
            return message_id, next((s for s in statuses if s.receiver_her == receiver), None)

        return dict(await asyncio.gather(*(one(m) for m in message_ids)))
