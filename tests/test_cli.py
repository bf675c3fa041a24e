"""The command line as an operator meets it: serve (dev token, health, graceful SIGTERM), submit, status,
parties, queue against a running gateway and on a stopped one's store, options before or after an action."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.service import Gateway

from .conftest import FIXTURES
from .region import ADMIN, settings_for

GATEWAY = [sys.executable, "-m", "gateway.cli"]
STUCK_S = 120.0  # a wait for a condition gives up only after this long: then something is stuck, not slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parties_lists_the_region() -> None:
    """One party a line: HER-id, name, kind, local|remote, adapter - 13 municipalities, GP, LiO, St. Olavs,
    Helsenorge."""
    lines = subprocess.run([*GATEWAY, "parties"], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == 5 for r in rows)
    assert sum(r[2] == "plo" and r[3] == "local" for r in rows) == 13
    assert {r[2] for r in rows if r[3] == "remote"} == {"hospital", "lab", "helsenorge"}
    assert [r[4] for r in rows if r[2] == "helsenorge"] == ["amqp"]
    assert any("Frøya" in r[1] for r in rows) and any("Orkdal sjukehus" in r[1] for r in rows)


def test_serve_submit_status_and_sigterm(tmp_path: Path) -> None:
    """First start makes the dev PKI and dev token; submit and status work; SIGTERM exits 0 and releases."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*GATEWAY, "serve", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + STUCK_S  # the first start makes the dev PKI: slow on a busy machine
        while True:
            assert server.poll() is None, "gateway serve exited"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # noqa: S310 - loopback
                    assert json.loads(response.read())["status"] == "ok"
                break
            except OSError:
                assert time.monotonic() < deadline, f"gateway serve did not answer within {STUCK_S} s"
                time.sleep(0.2)
        token = (tmp_path / "dev-token").read_text().strip()
        assert (tmp_path / "pki" / "ca.crt").exists() and (tmp_path / "gateway.sqlite").exists()
        fixture = FIXTURES / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml"
        assert server.poll() is None, "gateway serve exited (was /healthz answered by another process's port?)"
        submitted = subprocess.run(
            [*GATEWAY, "submit", str(fixture), "--url", url, "--token", token],
            capture_output=True,
            text=True,
            check=False,
        )
        assert submitted.returncode == 0, submitted.stderr  # the gateway's words, for whoever reads a failure
        message_id = json.loads(submitted.stdout)["id"]
        deadline = time.monotonic() + STUCK_S
        while True:
            status = subprocess.run(
                [*GATEWAY, "status", message_id, "--url", url, "--token", token],
                capture_output=True,
                text=True,
                check=True,
            )
            if json.loads(status.stdout)["state"] == "acknowledged" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert json.loads(status.stdout)["state"] == "acknowledged"
        refused = subprocess.run(
            [*GATEWAY, "submit", str(FIXTURES / "broken" / "bad-msgid.xml"), "--url", url, "--token", token],
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode == 1 and "E10" in refused.stderr
        shown = subprocess.run(
            [*GATEWAY, "queue", "--url", url, "--token", token, "show", message_id],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "message.accepted" in shown.stdout and "apprec.acknowledged" in shown.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0
    assert b"made a dev API token" in err
    assert b"worker.stopped" in _out


def test_schemas_lists_every_kind_and_its_check() -> None:
    """One kind a line with how it is checked; with the bundle every kind is checked officially."""
    from .conftest import BUNDLE, require_shared

    require_shared()
    lines = subprocess.run(
        [*GATEWAY, "schemas", "--schemas", str(BUNDLE)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    kinds = [line.split("\t") for line in lines if not line.startswith("#")]
    assert len(kinds) >= 30 and all(k[4] == "official" for k in kinds)
    epikrise = next(k for k in kinds if k[0] == "epikrise-1.2")
    assert epikrise[:5] == ["epikrise-1.2", "message", "1.2", "1.1", "official"]


# (command, its shared options, an action with its own arguments): written before and after the action
PLACEMENTS = [
    ("queue", ["--url", "http://127.0.0.1:9", "--token", "t0k"], ["list", "--state", "dead", "--since", "2h"]),
    ("queue", ["--data-dir", "var", "--config", "gw.toml"], ["retry", "--dead", "--route", "7200101"]),
    ("queue", ["--data-dir", "var"], ["show", "0f3c"]),
    ("pki", ["--data-dir", "var", "--config", "gw.toml"], ["init", "--force"]),
    ("pki", ["--data-dir", "var"], ["list"]),
]


@pytest.mark.parametrize(("command", "shared", "action"), PLACEMENTS)
def test_command_options_before_or_after_the_action(command: str, shared: list[str], action: list[str]) -> None:
    """`gateway queue --url U list` and `gateway queue list --url U` parse to the same values."""
    parser = build_parser()
    before = vars(parser.parse_args([command, *shared, *action]))
    after = vars(parser.parse_args([command, *action, *shared]))
    assert before == after
    given = dict(zip(shared[::2], shared[1::2], strict=True))
    for flag, value in given.items():
        assert str(before[flag.lstrip("-").replace("-", "_")]) == value
    split = vars(parser.parse_args([command, *shared[:2], *action, *shared[2:]]))  # some before, some after
    assert split == before


def test_an_option_after_the_action_wins_and_an_absent_one_keeps_its_default() -> None:
    parser = build_parser()
    args = parser.parse_args(["queue", "--url", "http://a", "list", "--url", "http://b"])
    assert args.url == "http://b"
    args = parser.parse_args(["queue", "list"])
    assert (args.url, args.token, args.data_dir, args.config) == (None, None, None, None)


def test_every_command_with_actions_accepts_its_options_after_the_action() -> None:
    """A guard for commands to come: each option of a command with actions is accepted by every action, and
    an option every action takes is accepted before the action too (gateway/cli/options.py does both)."""
    checked = 0
    for name, command in _subparsers(build_parser()).items():
        actions = _subparsers(command)
        if not actions:
            continue
        shared = _flags(command)
        in_every_action = set.intersection(*(_flags(action) for action in actions.values()))
        assert in_every_action <= shared, f"gateway {name} takes {sorted(in_every_action - shared)} only after ACTION"
        for action_name, action in actions.items():
            missing = shared - _flags(action)
            assert not missing, f"gateway {name} {action_name} does not take {sorted(missing)}"
            checked += 1
    assert checked >= 9  # queue's seven actions, pki's two


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for a in parser._actions if a.dest != "help" for flag in a.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


async def _store_with_a_message(data_dir: Path) -> str:
    """A stopped gateway's store holding one accepted message (Skaun -> St. Olavs, a copy to LiO)."""
    fixture = FIXTURES / "plo-innleggelsesrapport-1.6" / "innleggelsesrapport-kopi-legevakt.xml"
    async with Gateway(settings_for(data_dir, security={"protection": "none"})) as gateway:
        record, _created = await gateway.submit(fixture.read_bytes(), ADMIN)
    return record.id


def test_queue_on_a_stopped_store_with_options_before_or_after_the_action(tmp_path: Path) -> None:
    """`gateway queue --data-dir D list` and `gateway queue list --data-dir D` both work, and alike."""
    message_id = asyncio.run(_store_with_a_message(tmp_path))
    data_dir = ["--data-dir", str(tmp_path)]

    def queue(*argv: str) -> str:
        return subprocess.run([*GATEWAY, "queue", *argv], capture_output=True, text=True, check=True).stdout

    before, after = queue(*data_dir, "list"), queue("list", *data_dir)
    assert before == after
    assert [line.split("\t")[0] for line in before.splitlines()] == [message_id]
    assert json.loads(queue("pause", "7200101", *data_dir)) == {"route": "7200101", "paused": True}
    routes = {line.split("\t")[0]: line.split("\t")[1] for line in queue(*data_dir, "routes").splitlines()}
    assert routes["7200101"] == "paused"
    assert "message.accepted" in queue("show", message_id, *data_dir)
