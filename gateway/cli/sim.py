"""``gateway sim nhn``: a local NHN - the Meldingstjener REST API (v3 and v2) with scripted EDI peers, and
the fake HelseID beside it - for integrators to point their own client at.

``gateway sim nhn --config sim.toml --port 8092`` serves the MSH API on ``--port`` and, when the config
has a ``[helseid]`` section, the fake HelseID on ``helseid.port`` (its own origin: the issuer). Without one,
every API request acts as ``[auth] client_id`` for ``[auth] her_ids`` and a warning says so. The config
format is documented in docs/edi2.md, "The NHN simulator".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.cli.options import Actions, option
from gateway.cli.serve import until_signalled
from gateway.cli.sim_helsenorge import add_helsenorge
from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.log import configure, get_logger
from gateway.testing.nhn.msh import MAX_REQUEST_BYTES, Simulator, create_msh_app
from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.peers import PeerScript
from gateway.testing.nhn.principal import Authorizer, Principal

__all__ = ["SimConfig", "build", "load_sim_config", "register"]

log = get_logger(__name__)


@dataclass(frozen=True)
class PeerSend:
    document: bytes
    to: tuple[str, ...]
    after: float


@dataclass(frozen=True)
class PeerConfig:
    her_id: str
    name: str
    script: PeerScript
    sends: tuple[PeerSend, ...] = ()


@dataclass(frozen=True)
class HelseIdClient:
    client_id: str
    public_jwk: Mapping[str, Any]
    her_ids: frozenset[str] | None


@dataclass(frozen=True)
class HelseIdSection:
    port: int = 8093
    issuer: str | None = None
    token_lifetime_s: int = 300
    require_nonce: bool = True
    clients: tuple[HelseIdClient, ...] = ()


@dataclass(frozen=True)
class ArSection:
    """The Adresseregister stand-in beside the simulator: NHN's answer files from ../shared, and the
    peers (and the API users) as synthetic parties, so a HER-id nobody has is refused E21 at submit."""

    port: int = 8094
    username: str = "sio"
    password: str = "sio-dev"  # noqa: S105 - the local stand-in's, in the dev config beside it


@dataclass(frozen=True)
class SimConfig:
    """``sim.toml`` read: where to listen, who the API users are, the peers, the faults, who acts."""

    host: str = "127.0.0.1"
    port: int = 8092
    api_users: tuple[str, ...] = ()
    first_offset: int = 1000
    max_request_bytes: int = MAX_REQUEST_BYTES
    heartbeat_s: float = 15.0
    tick_s: float = 0.2
    peers: tuple[PeerConfig, ...] = ()
    faults: tuple[Mapping[str, Any], ...] = ()
    principal: Principal = field(default_factory=lambda: Principal("sim-client", None))
    helseid: HelseIdSection | None = None
    ar: ArSection | None = None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="run a local simulator of a national service (nhn: NHN's Meldingstjener; helsenorge: the Tjenestebuss)",
    )
    shared = [
        option(
            "--config",
            type=Path,
            help="nhn: the simulator's config (docs/edi2.md); helsenorge: the gateway's (default config/gateway.toml)",
        )
    ]
    which = Actions(p, shared, dest="simulator")
    nhn = which.add("nhn", help="NHN's Meldingstjener REST API (v3, v2) with scripted EDI peers")
    nhn.add_argument("--host", help="listen address (default: the config's, 127.0.0.1)")
    nhn.add_argument("--port", type=int, help="MSH API port (default: the config's, 8092)")
    nhn.add_argument("--client-key", type=Path, help="the key of the config's first HelseID client (not its key_file)")
    nhn.set_defaults(run=run)
    add_helsenorge(which)


def run(args: argparse.Namespace) -> int:
    config = load_sim_config(args.config, client_key=args.client_key) if args.config else SimConfig()
    if args.host:
        config = _replace(config, host=args.host)
    if args.port is not None:
        config = _replace(config, port=args.port)
    configure()
    return asyncio.run(_serve(config))


def _replace(config: SimConfig, **changes: Any) -> SimConfig:
    return dataclasses.replace(config, **changes)


# --- the config -----------------------------------------------------------------------------------------


def load_sim_config(path: Path, *, client_key: Path | None = None) -> SimConfig:
    """Read ``sim.toml``; files it names are relative to it (``client_key`` replaces the first HelseID
    client's ``key_file``). Raises ``ConfigError`` saying what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read the simulator config {path}: {exc}.") from None
    base = path.parent
    try:
        server, msh, auth = data.get("server", {}), data.get("msh", {}), data.get("auth", {})
        her_ids = [str(h) for h in auth.get("her_ids", [])]
        return SimConfig(
            host=str(server.get("host", "127.0.0.1")),
            port=int(server.get("port", 8092)),
            api_users=tuple(str(h) for h in msh.get("api_users", [])),
            first_offset=int(msh.get("first_offset", 1000)),
            max_request_bytes=int(float(msh.get("max_request_mb", 35)) * 2**20),
            heartbeat_s=float(msh.get("heartbeat_seconds", 15.0)),
            tick_s=float(msh.get("tick_seconds", 0.2)),
            peers=tuple(_peer(p, base) for p in data.get("peer", [])),
            faults=tuple(data.get("fault", [])),
            principal=Principal(str(auth.get("client_id", "sim-client")), frozenset(her_ids) or None),
            helseid=_helseid_section(data["helseid"], base, client_key) if "helseid" in data else None,
            ar=_ar_section(data["ar"]) if "ar" in data else None,
        )
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ConfigError(f"The simulator config {path} is not valid: {exc!r}.") from None


def _peer(data: Mapping[str, Any], base: Path) -> PeerConfig:
    errors = tuple(
        AppRecErrorInfo(str(e["code"]), str(e["details"]) if "details" in e else None)
        for e in data.get("apprec_errors", [])
    )
    apprec = data.get("apprec", "Ok")
    script = PeerScript(
        transport=data.get("transport", "Acknowledged"),
        reason=data.get("reason"),
        apprec=None if apprec == "none" else apprec,
        apprec_errors=errors,
        delay=float(data.get("delay_seconds", 0.0)),
        apprec_delay=float(data.get("apprec_delay_seconds", 0.0)),
    )
    sends = tuple(
        PeerSend(
            (base / s["file"]).read_bytes(), tuple(str(h) for h in s.get("to", [])), float(s.get("after_seconds", 0))
        )
        for s in data.get("send", [])
    )
    return PeerConfig(str(data["her_id"]), str(data.get("name", "")), script, sends)


def _ar_section(data: Mapping[str, Any]) -> ArSection:
    return ArSection(
        port=int(data.get("port", 8094)),
        username=str(data.get("username", "sio")),
        password=str(data.get("password", "sio-dev")),
    )


def _helseid_section(data: Mapping[str, Any], base: Path, client_key: Path | None = None) -> HelseIdSection:
    from joserfc.jwk import RSAKey

    clients = []
    for index, client in enumerate(data.get("client", [])):
        key_file = client_key if client_key is not None and index == 0 else base / client["key_file"]
        raw = key_file.read_text(encoding="utf-8")
        key = RSAKey.import_key(json.loads(raw) if raw.lstrip().startswith("{") else raw)
        her_ids = [str(h) for h in client.get("her_ids", [])]
        clients.append(HelseIdClient(str(client["client_id"]), key.as_dict(private=False), frozenset(her_ids) or None))
    return HelseIdSection(
        port=int(data.get("port", 8093)),
        issuer=data.get("issuer"),
        token_lifetime_s=int(data.get("token_lifetime_seconds", 300)),
        require_nonce=bool(data.get("require_nonce", True)),
        clients=tuple(clients),
    )


# --- building and serving -------------------------------------------------------------------------------


def build(
    config: SimConfig, *, clock: Clock | None = None, tick: bool = True
) -> tuple[Simulator, web.Application, web.Application | None]:
    """The simulator, its MSH API app and (with ``[helseid]``) the fake HelseID's app, as configured."""
    sim = Simulator(
        clock=clock,
        api_users=config.api_users,
        first_offset=config.first_offset,
        max_request_bytes=config.max_request_bytes,
        heartbeat=config.heartbeat_s,
    )
    for peer in config.peers:
        sim.add_peer(peer.her_id, peer.name, peer.script)
    for peer in config.peers:
        for send in peer.sends:
            sim.network.send_later(peer.her_id, send.document, after=send.after, to=send.to or None)
    for spec in config.faults:
        sim.faults.arm(spec)
    helseid_app, authorizer = _helseid(config)
    if authorizer is None:
        authorizer = _static(config.principal)
    msh_app = create_msh_app(sim, authorizer, tick_interval=config.tick_s if tick else None)
    return sim, msh_app, helseid_app


def _helseid(config: SimConfig) -> tuple[web.Application | None, Authorizer | None]:
    """HOOK (HelseID): the fake HelseID of ``gateway/testing/nhn/helseid.py`` and the DPoP-checking
    authorizer of ``dpop_check.py``, when the config asks for them; (None, None) otherwise."""
    section = config.helseid
    if section is None:
        return None, None
    from gateway.testing.nhn.dpop_check import DpopAuthorizer
    from gateway.testing.nhn.helseid import HELSEID, HelseIdConfig, RegisteredClient, helseid_app

    issuer = section.issuer or f"http://{config.host}:{section.port}"
    app = helseid_app(
        HelseIdConfig(
            clients=tuple(RegisteredClient(c.client_id, c.public_jwk, her_ids=c.her_ids) for c in section.clients),
            issuer=issuer,
            token_lifetime_s=section.token_lifetime_s,
            require_nonce=section.require_nonce,
        )
    )
    return app, DpopAuthorizer(app[HELSEID].public_key, issuer=issuer)


def _static(principal: Principal) -> Authorizer:
    """Every request acts as ``principal``: for a simulator run without the fake HelseID."""

    async def authorize(request: web.Request) -> Principal:
        return principal

    return authorize


def _ar(config: SimConfig, sim: Simulator) -> web.Application | None:
    """The Adresseregister stand-in, when the config asks for one and NHN's answer files are at hand."""
    if config.ar is None:
        return None
    from gateway.testing.nhn.ar import SyntheticParty, ar_app, ar_dir, fixture_parties

    if not ar_dir().is_dir():
        log.warning("sim.no_ar", code="sim.no_ar", reason="NHN's Adresseregister files (../shared) are not here")
        return None
    parties = [SyntheticParty(h, peer.name or f"HER-id {h}") for h, peer in sim.network.peers.items()]
    parties += [SyntheticParty(h, f"HER-id {h}") for h in config.api_users]
    return ar_app(fixture_parties(), username=config.ar.username, password=config.ar.password, synthetic=parties)


async def _serve(config: SimConfig) -> int:
    sim, msh_app, helseid_app = build(config)
    ar_app = _ar(config, sim)
    runners = []
    servers = (
        (msh_app, config.port),
        (helseid_app, config.helseid.port if config.helseid else 0),
        (ar_app, config.ar.port if config.ar else 0),
    )
    for app, port in servers:
        if app is None:
            continue
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, config.host, port).start()
        runners.append(runner)
    print(f"gateway: NHN simulator, MSH API (v3, v2) on http://{config.host}:{config.port}", file=sys.stderr)
    if helseid_app is not None and config.helseid is not None:
        print(f"gateway: fake HelseID on http://{config.host}:{config.helseid.port}", file=sys.stderr)
    else:
        log.warning(
            "sim.no_helseid",
            code="sim.no_helseid",
            client_id=config.principal.client_id,
            her_ids=sorted(config.principal.her_ids) if config.principal.her_ids else "all",
        )
    if ar_app is not None and config.ar is not None:
        print(f"gateway: Adresseregister stand-in on http://{config.host}:{config.ar.port}/v1/Ar", file=sys.stderr)
    print(
        f"gateway: API users {', '.join(config.api_users) or 'none'}; peers {', '.join(sim.network.peers) or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    await until_signalled()
    for runner in reversed(runners):
        await runner.cleanup()
    return 0
