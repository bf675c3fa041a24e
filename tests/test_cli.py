"""The command line as an operator meets it: serve (dev token, health, graceful SIGTERM), submit, status,
parties, queue against a running gateway."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .conftest import FIXTURES

GATEWAY = [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parties_lists_the_region() -> None:
    """One party a line: HER-id, name, kind, local|remote, adapter - 13 municipalities, GP, LiO, St. Olavs."""
    lines = subprocess.run([*GATEWAY, "parties"], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == 5 for r in rows)
    assert sum(r[2] == "plo" and r[3] == "local" for r in rows) == 13
    assert {r[2] for r in rows if r[3] == "remote"} == {"hospital", "lab"}
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
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310 - loopback
                    assert json.loads(response.read())["status"] == "ok"
                break
            except OSError:
                time.sleep(0.2)
        token = (tmp_path / "dev-token").read_text().strip()
        assert (tmp_path / "pki" / "ca.crt").exists() and (tmp_path / "gateway.sqlite").exists()
        fixture = FIXTURES / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml"
        submitted = subprocess.run(
            [*GATEWAY, "submit", str(fixture), "--url", url, "--token", token],
            capture_output=True,
            text=True,
            check=True,
        )
        message_id = json.loads(submitted.stdout)["id"]
        for _ in range(50):
            status = subprocess.run(
                [*GATEWAY, "status", message_id, "--url", url, "--token", token],
                capture_output=True,
                text=True,
                check=True,
            )
            if json.loads(status.stdout)["state"] == "acknowledged":
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
