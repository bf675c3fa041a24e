"""The ``edi2`` transport: the national network through NHN's Meldingstjener REST API ("EDI 2.0").

NHN does the ebXML, the CMS, the transport receipts and the AppRec envelopes towards every EDI user, so
this channel carries the message XML itself (``carries = "plain"``), as UTF-8 (adapters/edi2/documents.py),
and is used for every party whose register entry says ``adapter = "edi2"`` and as the region's default
route for HER-ids outside the register. One ``POST`` per delivery (its receiver), so each receiver's delivery
keeps its own retries and state. An AppRec the gateway sends for a message that came this way goes back as
NHN's ``apprec`` call (status and 8221 errors), since NHN builds the AppRec XML towards the EDI sender.

API version 3 declares every local HER-id (``PUT /mshconfigurations``) before anything is sent or fetched
for it. A HER-id NHN will not serve this client - another HelseID client holds it (423 Locked), or this one
may not act for it (403) - is left out, loudly, once, while the others go on: what it sends waits
(retried), it is not followed, and it is declared again every ``locked_recheck_s`` until it is ours; then
what came for it meanwhile is read (adapters/edi2/follower.py catches it up). Receiving is
adapters/edi2/follower.py; what the adapter keeps in the store, adapters/edi2/ledger.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from pathlib import Path
from typing import Any

import aiohttp

from adapters.edi2.ar import AddressRegister, refusal
from adapters.edi2.documents import as_utf8, read_own_apprec
from adapters.edi2.follower import Follower
from adapters.edi2.ledger import Ledger
from adapters.edi2.msh import MshClient
from adapters.helseid.client import HelseIdClient
from adapters.helseid.dpop import SigningKey
from gateway import __version__
from gateway.errors import ChannelLocked, ConfigError, NotAuthorized
from gateway.log import get_logger
from gateway.routing import Listing
from gateway.transport import InboundHandler, Packet, Transport, TransportContext

__all__ = ["Edi2Transport"]

log = get_logger(__name__)


class Edi2Transport(Transport):
    name = "edi2"
    carries = "plain"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        opts = self.context.options
        self.base_url = _required(opts, "base_url")
        self.api_version = str(opts.get("api_version", "3"))
        if self.api_version not in ("2", "3"):
            raise ConfigError(f"[adapters.edi2] api_version must be '3' or '2', not {self.api_version!r}.")
        self.receive_mode = str(opts.get("receive", "stream"))
        if self.receive_mode not in ("stream", "poll"):
            raise ConfigError(f"[adapters.edi2] receive must be 'stream' or 'poll', not {self.receive_mode!r}.")
        self.poll_interval_s = float(opts.get("poll_interval_s", 2.0))
        self.client_locked = bool(opts.get("client_locked", True))
        key_file = Path(_required(opts, "key_file"))
        self.key_file = key_file if key_file.is_absolute() else Path(self.context.data_dir) / key_file
        self._session: aiohttp.ClientSession | None = None
        self._msh: MshClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.ledger = Ledger(self.context.state)
        self._configured = self.api_version == "2" or not self.context.local_her_ids  # v2 has no configurations
        self._configuring = asyncio.Lock()
        # our HER-ids NHN will not serve us now: another HelseID client holds them (423), or this client may
        # not act for them (403) - with NHN's word
        self._locked: dict[str, ChannelLocked | NotAuthorized] = {}
        self.locked_recheck_s = float(opts.get("locked_recheck_s", 60.0))
        self._rechecked_at = 0.0

    # -- life ---------------------------------------------------------------------------------------------

    async def _client(self) -> MshClient:
        if self._msh is None:
            opts = self.context.options
            self._session = aiohttp.ClientSession()
            key = SigningKey.from_file(self.key_file, alg=opts.get("algorithm"))
            helseid = HelseIdClient(
                _required(opts, "helseid_url"), _required(opts, "client_id"), key, session=self._session
            )
            self._msh = MshClient(
                self.base_url,
                helseid,
                session=self._session,
                api_version="3" if self.api_version == "3" else "2",
                stream_idle_s=float(opts.get("stream_idle_s", 120.0)),
                source_system=str(opts.get("source_system", f"sio-gateway, v{__version__}")),
                application=("sio-gateway", __version__),
            )
            if opts.get("ar_url"):
                register = AddressRegister(
                    str(opts["ar_url"]),
                    str(opts.get("ar_username", "")),
                    str(opts.get("ar_password", "")),
                    session=self._session,
                )
                self.directory = AddressRegisterDirectory(register)
        return self._msh

    async def start(self, handler: InboundHandler) -> None:
        msh = await self._client()
        if self.context.local_her_ids:
            follower = Follower(
                msh,
                self.ledger,
                self.context,
                handler,
                receive_mode=self.receive_mode,
                poll_interval_s=self.poll_interval_s,
                her_ids=self._followed,
                prepare=functools.partial(self._configure, msh, again=True),
                locked=self._declare_anew,
                skip_after_s=float(self.context.options.get("skip_after_s", 600.0)),
            )
            self._task = asyncio.create_task(follower.run(), name="edi2-receive")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._msh = None

    # -- sending ------------------------------------------------------------------------------------------

    async def _configure(self, msh: MshClient, *, again: bool = False) -> None:
        """Declare every local HER-id at NHN (v3) before anything is sent or fetched for it: NHN refuses
        requests for a HER-id without a configuration. Once per process - the send path and the receive loop
        share it - and then, from the receive loop (``again``), the HER-ids that were locked, every
        ``locked_recheck_s``."""
        recheck = again and bool(self._locked) and time.monotonic() - self._rechecked_at >= self.locked_recheck_s
        if self._configured and not recheck:
            return
        async with self._configuring:
            if not self._configured:
                try:
                    await msh.configure(self.context.local_her_ids, client_locked=self.client_locked)
                except (ChannelLocked, NotAuthorized):  # one of them is held by another client, or not ours to
                    # serve: find which, go on with the rest
                    await self._configure_each(msh, self.context.local_her_ids)
                else:
                    for her_id in sorted(self._locked):
                        await self._unlocked(her_id)
                self._configured = True
            elif recheck:
                self._rechecked_at = time.monotonic()
                if self.api_version == "2":  # no configurations to ask with: the next send finds out
                    for her_id in sorted(self._locked):
                        await self._unlocked(her_id)
                else:
                    await self._configure_each(msh, tuple(sorted(self._locked)))

    async def _configure_each(self, msh: MshClient, her_ids: tuple[str, ...]) -> None:
        for her_id in her_ids:
            try:
                await msh.configure((her_id,), client_locked=self.client_locked)
            except (ChannelLocked, NotAuthorized) as exc:
                await self._note_locked(her_id, exc)
            else:
                await self._unlocked(her_id)

    async def _unlocked(self, her_id: str) -> None:
        if self._locked.pop(her_id, None) is not None:
            if self.api_version == "3":
                await self.ledger.back(her_id)
            log.warning("edi2.her_id_unlocked", code="edi2.her_id_unlocked", her_id=her_id)

    async def _note_locked(self, her_id: str, exc: ChannelLocked | NotAuthorized) -> None:
        """One loud line per incident: NHN says another HelseID client holds ``her_id`` (423), or that this
        client may not act for it (403)."""
        if her_id not in self._locked:
            self._locked[her_id] = exc
            if self.api_version == "3":
                await self.ledger.left_out(her_id)
            log.error("edi2.her_id_locked", code=exc.event, her_id=her_id, error=exc.message)

    def _declare_anew(self) -> None:
        """NHN answered 423 or 403 about one of ours since they were declared: declare them all again, finding
        which."""
        self._configured = self.api_version == "2"

    def _followed(self) -> tuple[str, ...]:
        return tuple(h for h in self.context.local_her_ids if h not in self._locked)

    async def send(self, packet: Packet) -> None:
        msh = await self._client()
        await self._configure(msh)
        held = self._locked.get(packet.from_her)
        if held is not None:  # NHN is not asked again until the receive loop finds the HER-id ours
            raise type(held)(f"NHN does not serve HER-id {packet.from_her} to this client now: {held.message}")
        try:
            if packet.subject == "APPREC" and await self._answer(msh, packet):
                return
            message_id = await msh.send(
                sender_her=packet.from_her,
                receiver_hers=[packet.to_her],
                msg_type=packet.subject,
                xml=as_utf8(packet.body),
            )
        except ChannelLocked as exc:  # locked since we declared it
            if packet.from_her in self.context.local_her_ids:
                await self._note_locked(packet.from_her, exc)
            raise
        # v2 has no notifications: its statuses are polled
        await self.ledger.sent(message_id, packet.reference, packet.to_her, poll=self.api_version == "2")
        log.info("edi2.sent", nhn_message_id=message_id, receiver=packet.to_her)

    async def _answer(self, msh: MshClient, packet: Packet) -> bool:
        """An AppRec for a message that came through NHN goes back as NHN's apprec call; False when the
        original did not come this way (then the AppRec is sent as a message)."""
        apprec = read_own_apprec(packet.body)
        if apprec is None:
            return False
        original_msg_id, status, errors = apprec
        original = await self.ledger.answered_by(original_msg_id, to_her=packet.to_her, from_her=packet.from_her)
        if original is None:
            return False
        # the entry stays: if this process dies before the worker records the AppRec as sent, its next attempt
        # must post it to NHN again (at-least-once), never send it as a message
        await msh.apprec(original.nhn_id, sender_her=original.receiver, status=status, errors=errors)
        log.info("edi2.apprec_posted", nhn_message_id=original.nhn_id, status=status, receiver=packet.to_her)
        return True


class AddressRegisterDirectory:
    """The routing's :class:`~gateway.routing.Directory` from NHN's Adresseregister."""

    def __init__(self, register: AddressRegister) -> None:
        self.register = register

    async def listing(self, her_id: str) -> Listing:
        party = await self.register.lookup(her_id)
        return Listing(refusal(her_id, party), party.label if party is not None else "")


def _required(options: Any, key: str) -> str:
    value = options.get(key)
    if not value:
        raise ConfigError(f"[adapters.edi2] {key} is required.")
    return str(value)

