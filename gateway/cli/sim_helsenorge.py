"""``gateway sim helsenorge``: a local Tjenestebuss with Helsenorge on it, for ``./dev run`` and integrators.

Reads the *gateway's* config (``--config``, ``--data-dir``, as ``gateway serve`` reads them): starts a
throwaway RabbitMQ under ``<data dir>/rabbitmq`` listening on the port of ``[adapters.amqp] url`` (loopback
only), declares NHN's namespace with every party's queues, and runs a Helsenorge.Messaging-like peer
(gateway/testing/hm_peer.py) for each remote party of the region reached by ``amqp`` - with that party's
dev-PKI keys, so the gateway's CMS towards it is real. The peer answers what it gets with AppRecs and
synchronous replies, and with ``--every S`` sends a citizen's message (a dialogue message) to the region's
home care services in turn every S seconds. The broker's data stays between runs; TERM or Ctrl-C stops
the peers, then the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from adapters.amqp.settings import AmqpSettings
from gateway.cli.options import Actions
from gateway.cli.serve import until_signalled
from gateway.config import PROJECT_ROOT, Settings, load_settings
from gateway.errors import ConfigError
from gateway.log import configure, get_logger
from gateway.registry import Party, Register, load_register
from gateway.testing.hm_peer import HelsenorgePeer
from gateway.testing.rabbit import Broker, find_server

__all__ = ["add_helsenorge", "citizen_message"]

log = get_logger(__name__)

#: the citizen's message: the region's dialogue request, re-addressed (synthetic patient, fictive HER-ids)
_DIALOGUE = PROJECT_ROOT / "fixtures" / "messages" / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml"
_FROM = (b"7100200", b"7100201")  # the fixture's sender: Hitra's home care (organisation, service)
_TO = (b"7102000", b"7102001")  # its receiver: the GPs


def add_helsenorge(actions: Actions) -> None:
    """The ``helsenorge`` action of ``gateway sim`` (its own options: the gateway's config)."""
    p = actions.add("helsenorge", help="a local Tjenestebuss (RabbitMQ) with Helsenorge's peer on it")
    p.add_argument("--data-dir", type=Path, help="the gateway's data dir: its dev PKI, and the broker's data")
    p.add_argument("--every", type=float, default=0.0, help="send a citizen's message every S seconds (0: never)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    configure()
    settings = load_settings(args.config, data_dir=args.data_dir)
    register = load_register(settings.gateway.region)
    amqp = AmqpSettings.from_options(settings.adapters.get("amqp", {}))
    parties = [p for p in register.remote_parties if p.adapter == "amqp"]
    if not parties:
        raise ConfigError(f"No remote party of {settings.gateway.region} is reached by amqp: nobody to play.")
    url = urlsplit(amqp.url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"[adapters.amqp] url names {url.hostname}; the local bus listens on loopback only.")
    if find_server() is None:
        raise ConfigError("RabbitMQ is not installed (apt-get install rabbitmq-server); no local bus.")
    broker = Broker(settings.data_dir / "rabbitmq", port=url.port or 5672)
    broker.start()
    try:
        broker.set_up_namespace(amqp.addresses.namespace, [p.her_id for p in register])
        print(f"gateway: Tjenestebuss (RabbitMQ) on {broker.amqp_url.split('@')[-1]}", file=sys.stderr)
        return asyncio.run(_serve(settings, register, parties, broker, amqp, args.every))
    finally:
        broker.stop()


async def _serve(
    settings: Settings, register: Register, parties: list[Party], broker: Broker, amqp: AmqpSettings, every: float
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(
                HelsenorgePeer(
                    party.her_id,
                    url=broker.amqp_url,
                    pki=settings.data_dir / "pki",
                    namespace=amqp.addresses.namespace,
                    address_format=amqp.addresses.format,
                )
            )
            for party in parties
        ]
        print(f"gateway: Helsenorge peer(s) {', '.join(p.her_id for p in parties)} on the bus", file=sys.stderr)
        sending = asyncio.create_task(_send_every(peers, parties, register, every)) if every > 0 else None
        await until_signalled()
        if sending is not None:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    return 0


async def _send_every(peers: list[HelsenorgePeer], parties: list[Party], register: Register, every: float) -> None:
    """A citizen's message to each home care service in turn, from each Helsenorge party in turn."""
    home_care = [p for p in register.local_parties if p.kind == "plo"]
    document = _DIALOGUE.read_bytes()
    for (peer, party), receiver in zip(itertools.cycle(zip(peers, parties, strict=True)), itertools.cycle(home_care)):
        await asyncio.sleep(every)
        try:
            await peer.send(citizen_message(document, party, receiver), receiver.her_id, subject="DIALOG_HELSEFAGLIG")
        except Exception as exc:  # the bus away, say: the next one is tried at its time
            log.warning("sim.helsenorge_send_failed", code="sim.helsenorge_send_failed", error=type(exc).__name__)
        else:
            log.info("sim.helsenorge_sent", sender=party.her_id, receiver=receiver.her_id)


def citizen_message(document: bytes, sender: Party, receiver: Party) -> bytes:
    """The dialogue fixture from ``sender`` (Helsenorge) to ``receiver`` (a home care service), new MsgId."""
    swaps = dict(
        zip(
            _FROM + _TO,
            (
                sender.organisation.her_id.encode(),
                sender.her_id.encode(),
                receiver.organisation.her_id.encode(),
                receiver.her_id.encode(),
            ),
            strict=True,
        )
    )
    readdressed = re.sub(b"|".join(swaps), lambda m: swaps[m.group(0)], document)
    return re.sub(rb"<MsgId>[^<]+</MsgId>", f"<MsgId>{uuid.uuid4()}</MsgId>".encode(), readdressed, count=1)
