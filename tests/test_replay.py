"""`gateway replay --via http`: the fixtures through the region as two gateway processes over http, CMS on -
the gateway-to-gateway transport kept for peers that run this gateway (the NHN way: test_replay_nhn.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_replay_passes_every_fixture(tmp_path: Path) -> None:
    """Exit 0, every fixture at its expected end state, each receiver's AppRec shown, latency measured."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay", "--via", "http", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^(\d+)/\1 fixtures reached their expected end state", out, re.M)
    assert "AppRec round trip: median" in out
    assert out.count("acknowledged (AppRec 1)") >= 15  # 12 valid fixtures, three of them with a copy receiver
    assert "rejected E36 (AppRec 2 sent)" in out and "refused at transport: transport:not-well-formed-xml" in out
    # it really was two processes talking over http with CMS
    hub_log = (tmp_path / "sio-hub" / "gateway.log").read_text()
    stolav_log = (tmp_path / "st-olavs" / "gateway.log").read_text()
    assert '"via": "http"' in hub_log and '"via": "http"' in stolav_log
    assert 'protection = "cms"' in (tmp_path / "st-olavs" / "gateway.toml").read_text()
