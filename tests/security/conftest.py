"""Fixtures of the security tests: a small region with a real dev PKI, made once and copied per test.

The template (config, register file, data dir with ``pki/``) is made once per session by the code under
test (``init_dev_pki``); tests that change certificates or the CRL get their own copy (``world``), so RSA
key generation happens once. Everything is real: real keys, real CMS, the real openssl binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings, load_settings
from gateway.registry import Organisation, Party, Register
from gateway.security.certs import CertRef, load_certificate_file
from gateway.security.cms import encrypt, sign
from gateway.security.devpki import init_dev_pki
from gateway.security.keys import KeyPair, load_private_key
from gateway.security.protection import SignThenEncrypt, build_sign_then_encrypt

FROYA = "7100101"  # local
HITRA = "7100201"  # local
STOLAV = "7200101"  # remote (its dev keys exist, so openssl can play it)

#: A message with CRLF line ends and ISO-8859-1 bytes (ø, æ, å), to prove nothing rewrites the content.
XML = (
    b'<?xml version="1.0" encoding="ISO-8859-1"?>\r\n'
    b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">\r\n'
    b"  <MsgInfo><MsgId>b1f0c2a4-0000-4000-8000-000000000001</MsgId></MsgInfo>\r\n"
    b"  <Note>Pasienten \xf8nsker \xe6rlig svar p\xe5 sp\xf8rsm\xe5l.</Note>\n"
    b"</MsgHead>\r\n"
)

PARTIES = [
    Party(FROYA, "Pleie og omsorg, hjemmetjenesten", "plo", Organisation("7100100", "Frøya kommune"), local=True),
    Party(HITRA, "Pleie og omsorg, hjemmetjenesten", "plo", Organisation("7100200", "Hitra kommune"), local=True),
    Party(
        STOLAV,
        "Orkdal sjukehus, medisinsk avdeling",
        "hospital",
        Organisation("7200000", "St. Olavs hospital HF"),
        local=False,
        adapter="http",
        endpoint="http://127.0.0.1:9/transport/http",
    ),
]


def make_register(parties: Sequence[Party] = PARTIES) -> Register:
    return Register(parties, name="security test region")


def _region_toml(parties: Sequence[Party]) -> str:
    out = ['[region]\nname = "security test region"\n']
    for p in parties:
        out.append(
            f'[[party]]\nher_id = "{p.her_id}"\nname = "{p.name}"\nkind = "{p.kind}"\n'
            f'organisation = {{ her_id = "{p.organisation.her_id}", name = "{p.organisation.name}" }}\n'
            f'location = "{"local" if p.local else "remote"}"\n'
            + (f'adapter = "{p.adapter}"\nendpoint = "{p.endpoint}"\n' if not p.local else "")
        )
    return "\n".join(out)


CONFIG = """
[gateway]
name = "security-tests"
data_dir = "data"
region = "region.toml"

[log]
format = "json"
level = "warning"
"""


@dataclass(frozen=True)
class World:
    """A config file, its settings and register, and the dev PKI under its data dir."""

    root: Path
    config: Path
    settings: Settings
    register: Register

    @property
    def pki(self) -> Path:
        return self.settings.in_data_dir("pki")

    def party(self, her_id: str) -> Party:
        party = self.register.get(her_id)
        assert party is not None
        return party

    def protection(self, **security: Any) -> SignThenEncrypt:
        """A freshly built protection (keys, certificates and CRL files read now)."""
        settings = replace(self.settings, security=replace(self.settings.security, **security))
        return build_sign_then_encrypt(settings, self.register)

    def pair(self, her_id: str, purpose: str) -> KeyPair:
        """A party's dev certificate and key, read from the files (``purpose``: sign or enc)."""
        folder = self.pki / her_id
        return KeyPair(load_certificate_file(folder / f"{purpose}.crt"), load_private_key(folder / f"{purpose}.key"))


def _make_world(root: Path) -> World:
    (root / "config.toml").write_text(CONFIG, encoding="utf-8")
    (root / "region.toml").write_text(_region_toml(PARTIES), encoding="utf-8")
    settings = load_settings(root / "config.toml")
    return World(root, root / "config.toml", settings, make_register())


@pytest.fixture(scope="session", name="template")
def _template(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = _make_world(tmp_path_factory.mktemp("security-template"))
    init_dev_pki(world.settings, world.register)
    return world


@pytest.fixture(scope="session", name="protection")
def _protection(template: World) -> SignThenEncrypt:
    """The protection over the untouched template PKI, shared by tests that only read."""
    return template.protection()


@pytest.fixture(name="world")
def _world(template: World, tmp_path: Path) -> World:
    """A private copy of the template, for tests that change certificates, keys or the CRL."""
    root = tmp_path / "world"
    shutil.copytree(template.root, root)
    return World(root, root / "config.toml", load_settings(root / "config.toml"), make_register())


def seal(content: bytes, signer: KeyPair, recipient: CertRef) -> bytes:
    """Sign with any certificate (odd ones included) and encrypt: a packet from a peer of our making."""
    return encrypt(sign(content, signer), recipient)


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    """Run the openssl CLI; fail the test with its stderr if it fails."""
    done = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(map(str, args))} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def gateway_cli(*args: str | Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m gateway.cli`` from this venv as a separate process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        check=False,
        env=env,
        timeout=60,
    )
