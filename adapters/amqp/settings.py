"""``[adapters.amqp]``: the settings of the Tjenestebuss adapter, read once, for the transport and the
operator's tools alike (docs/transports.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from adapters.amqp.bus import Bus
from adapters.amqp.fields import Addresses, queue_name
from adapters.cppa.client import cppa_base_url
from gateway.errors import ConfigError

__all__ = ["AmqpSettings"]

_CMS_ROOM = 64 * 1024


@dataclass(frozen=True)
class AmqpSettings:
    url: str
    addresses: Addresses
    #: RabbitMQ picks the virtual host from the open frame's hostname, ``vhost:<name>``; None: the default
    #: vhost, as on NHN's bus
    virtual_host: str | None = None
    credit: int = 10
    reconnect_max_s: float = 30.0
    release_after_s: float = 60.0
    ttl_s: float | None = None
    #: a synchronous reply's time to live on the bus (Helsenorge's 15 s call timeout)
    sync_timeout_s: float = 15.0
    #: this process's reply queue for synchronous requests, ``{her}`` the requesting party: with several
    #: gateway processes each needs its own (Helsenorge.Messaging's ``ReplyQueueMapping``; NHN makes them)
    sync_reply_queue: str = "{her}_syncreply"
    #: how many received messages are handled at a time, and peers' synchronous requests answered
    #: (Helsenorge.Messaging's ProcessingTasks; adapters/amqp/workers.py)
    receive_concurrency: int = 8
    sync_concurrency: int = 8
    #: the largest body taken: the gateway's message cap (it passes ``max_bytes``) and room for the CMS
    #: around it (the signer's certificates, the signature, the recipient info)
    max_body: int = 10 * 1024 * 1024 + _CMS_ROOM
    #: how long a send is remembered for a receiver's error report about it (adapters/amqp/sent.py)
    report_window_days: int = 14
    #: the local HER-ids whose queues this gateway reads; None: every local party's
    her_ids: tuple[str, ...] | None = None
    #: NHN's CPPA service (docs/cppa.md); None: every party's queues are the defaults (or its endpoint)
    cppa_url: str | None = None
    cppa_cache_s: float = 300.0
    cppa_outage_cache_s: float = 30.0
    cppa_timeout_s: float = 10.0
    #: the HelseID client that asks the CPPA service (NHN's ``/v2/`` takes DPoP-bound tokens with scope
    #: ``nhn:cppa/access-with-dpop``): its issuer, id and private key file (in the data dir unless absolute),
    #: as ``[adapters.edi2]`` names them; None: the service is asked without a token
    helseid_url: str | None = None
    client_id: str | None = None
    key_file: str | None = None

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> AmqpSettings:
        url = opts.get("url")
        if not url:
            raise ConfigError("[adapters.amqp] url is required (e.g. amqp://guest:guest@127.0.0.1:5672).")
        address_format = str(opts.get("address_format", "v1"))
        if address_format not in ("v1", "v2"):
            raise ConfigError(f"[adapters.amqp] address_format must be 'v1' or 'v2', not {address_format!r}.")
        fmt: Literal["v1", "v2"] = "v2" if address_format == "v2" else "v1"
        ttl = opts.get("ttl_s")
        listed = opts.get("her_ids")
        helseid = [str(opts[name]) if opts.get(name) else None for name in ("helseid_url", "client_id", "key_file")]
        if any(helseid) and not all(helseid):
            raise ConfigError("[adapters.amqp] helseid_url, client_id and key_file go together (the CPPA's HelseID).")
        return cls(
            url=str(url),
            addresses=Addresses(str(opts.get("namespace", "")), fmt),
            virtual_host=str(opts["virtual_host"]) if opts.get("virtual_host") else None,
            credit=int(opts.get("credit", 10)),
            reconnect_max_s=float(opts.get("reconnect_max_s", 30.0)),
            release_after_s=float(opts.get("release_after_s", 60.0)),
            ttl_s=float(ttl) if ttl else None,
            sync_timeout_s=float(opts.get("sync_timeout_s", 15.0)),
            sync_reply_queue=_reply_queue(str(opts.get("sync_reply_queue", "{her}_syncreply"))),
            receive_concurrency=max(1, int(opts.get("receive_concurrency", 8))),
            sync_concurrency=max(1, int(opts.get("sync_concurrency", 8))),
            max_body=int(opts.get("max_bytes", 10 * 1024 * 1024)) + _CMS_ROOM,
            report_window_days=max(1, int(opts.get("report_window_days", 14))),
            her_ids=tuple(str(h) for h in listed) if listed is not None else None,
            cppa_url=str(cppa_base_url(str(opts["cppa_url"]))) if opts.get("cppa_url") else None,
            cppa_cache_s=float(opts.get("cppa_cache_s", 300.0)),
            cppa_outage_cache_s=float(opts.get("cppa_outage_cache_s", 30.0)),
            cppa_timeout_s=float(opts.get("cppa_timeout_s", 10.0)),
            helseid_url=helseid[0],
            client_id=helseid[1],
            key_file=helseid[2],
        )

    def reply_queue(self, her_id: str) -> str:
        """The queue this process reads replies to ``her_id``'s synchronous requests on."""
        return self.sync_reply_queue.replace("{her}", her_id)

    def bus(self, *, credit: int | None = None, name: str = "amqp") -> Bus:
        """A connection to the bus with these settings (``credit`` for a tool that reads many at once)."""
        return Bus(
            self.url,
            virtual_host=self.virtual_host,
            credit=credit or self.credit,
            reconnect_max_s=self.reconnect_max_s,
            name=name,
        )


def _reply_queue(template: str) -> str:
    """``sync_reply_queue`` checked: one of the party's own queues (``{her}_...``; a responder sends a reply
    nowhere else), a queue name when ``{her}`` is filled in."""
    if not template.startswith("{her}_") or template.count("{her}") != 1:
        raise ConfigError(f"[adapters.amqp] sync_reply_queue must be '{{her}}_<name>', not {template!r}.")
    filled = template.replace("{her}", "1")
    try:
        valid = queue_name(filled) == filled
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"[adapters.amqp] sync_reply_queue {template!r} is no queue name.")
    return template
