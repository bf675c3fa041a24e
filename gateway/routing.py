"""Routing, in one place: which channel reaches a receiver, which deliveries a message gets, where an
AppRec goes, and which local party takes a received message - and the E10/E21 decisions that go with them.

A *route* is a receiver HER-id and the channel that reaches it: ``local`` (a party this gateway serves), a
transport adapter's name for a remote party of the register (``http``, ``edi2``, ...), ``ehr:folder`` /
``ehr:callback`` (a received message handed to the local EHR), or - for a HER-id outside the register -
the region's default route (``[routing] default_adapter``, e.g. ``edi2``: an EHR in the region may write
to any HER-id in Norway). With a default route, a :class:`Directory` (NHN's Adresseregister) can say that
a HER-id is no communication party at all, and the message is refused E21 with its answer at submit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.config import Settings
from gateway.errors import GatewayError, MetadataMismatch, UnknownReceiver
from gateway.model.envelope import Addressee, Envelope, Ident, Unit
from gateway.registry import Organisation, Party, Register, is_her_id
from gateway.retry import policy_for
from gateway.store.base import DeliveryState, NewDelivery
from gateway.validation import rules

__all__ = ["Addressed", "Directory", "Listing", "Route", "Router", "addressee_of"]



@dataclass(frozen=True)
class Listing:
    """What the directory says of a HER-id: why a message to it must be refused (E21), or None when it may
    be sent; and the name operators know the party by (shown in the delivery's trace, never logged)."""

    refusal: str | None
    name: str = ""


class Directory(Protocol):
    """The national register of communication parties, as far as routing needs it."""

    async def listing(self, her_id: str) -> Listing: ...


@dataclass(frozen=True)
class Route:
    """How a delivery to ``receiver_her`` travels. ``party`` is None for a receiver outside the register."""

    receiver_her: str
    channel: str
    party: Party | None = None

    @property
    def destination(self) -> str:
        """Where the channel sends it: a remote party's endpoint, the EHR's folder or callback URL; ""
        where the channel needs none (local hand-over, NHN's API, which routes by HER-id)."""
        party = self.party
        if party is None:
            return ""
        if self.channel == "ehr:folder":
            return str(party.folder or "")
        if self.channel == "ehr:callback":
            return party.callback_url or ""
        return "" if party.local else (party.endpoint or "")


@dataclass(frozen=True)
class Addressed:
    """Which local party takes a received message, as whom and in which role it answers, and the error
    (E10, E21) when the transport and the message disagree about the receiver."""

    party: Party
    answering: Addressee
    role: str
    error: GatewayError | None = None


class Router:
    def __init__(self, register: Register, settings: Settings, *, directory: Directory | None = None) -> None:
        self.register = register
        self.settings = settings
        self.directory = directory
        self.default_adapter = settings.routing.default_adapter

    # -- where a receiver is reached ------------------------------------------------------------------

    def route(self, her_ids: Iterable[str]) -> Route | None:
        """The route to the first party the HER-ids (most specific first) name - or, for a HER-id outside
        the register, the default route; None when there is neither."""
        ids = list(her_ids)
        party = self.register.find(ids)
        if party is not None:
            return Route(party.her_id, self.channel_for(party), party)
        if self.default_adapter and ids and is_her_id(ids[0]):
            return Route(ids[0], self.default_adapter)
        return None

    def for_delivery(self, receiver_her: str, channel: str) -> Route:
        """The route a stored delivery travels (the register may have changed since it was planned)."""
        return Route(receiver_her, channel, self.register.get(receiver_her))

    @staticmethod
    def channel_for(party: Party) -> str:
        """How a delivery to a party of the register travels: within the hub, or through its adapter."""
        return "local" if party.local else (party.adapter or "http")

    @staticmethod
    def ehr_delivery(party: Party) -> NewDelivery:
        """The hand-over of a received message to ``party``'s EHR: its inbox (pulled), folder or callback."""
        if party.delivery == "inbox":
            return NewDelivery(party.her_id, "EHR", "ehr:inbox", state=DeliveryState.INBOX, ordered=False)
        return NewDelivery(party.her_id, "EHR", f"ehr:{party.delivery}", ordered=True)

    # -- outbound: one delivery per receiver ----------------------------------------------------------

    async def plan(self, envelope: Envelope, *, now: float, receipts: bool = True) -> list[NewDelivery]:
        """One delivery per receiver: the primary, then each copy receiver named by a HER-id. A receiver that
        has no route - or that the directory says is no communication party - is E21."""
        receivers: list[tuple[Addressee, str]] = []
        if envelope.receiver is not None:
            receivers.append((envelope.receiver, "PRIM"))
        receivers += [(copy, "COP") for copy in envelope.copies]
        settings = self.settings
        deadline_h = settings.receipts.deadline_by_kind.get(envelope.kind.name, settings.receipts.deadline_h)
        warning_h = min(settings.receipts.warning_h, deadline_h)
        start = max(rules.gen_timestamp(envelope.gen_date) or now, now)
        planned: list[NewDelivery] = []
        seen: set[str] = set()
        for addressee, role in receivers:
            if not addressee.her_ids:
                if role == "PRIM":
                    raise UnknownReceiver(f"The {envelope.kind.title} does not name its receiver by a HER-id.")
                continue  # a copy for paper or another channel: not ours to deliver
            route, name = await self._checked_route(addressee, role)
            if route.receiver_her in seen:
                continue
            seen.add(route.receiver_her)
            policy = policy_for(settings.retry, route.receiver_her)
            planned.append(
                NewDelivery(
                    receiver_her=route.receiver_her,
                    role=role,
                    channel=route.channel,
                    ordered=policy.ordered,
                    deadline_at=start + deadline_h * 3600 if receipts else None,
                    warn_at=start + warning_h * 3600 if receipts else None,
                    expires_at=now + policy.ttl_s,
                    receiver_name=name,
                )
            )
        return planned

    async def _checked_route(self, addressee: Addressee, role: str) -> tuple[Route, str]:
        """The route to an addressee, and - for a receiver outside the register - its name in the directory."""
        who = "copy receiver" if role == "COP" else "receiver"
        route = self.route(addressee.her_ids)
        if route is None:
            raise UnknownReceiver(
                f"The {who} with HER-id {', '.join(addressee.her_ids)} is not in the address register "
                f"({self.register.name or 'this gateway'})."
            )
        if route.party is None and self.directory is not None:
            listing = await self.directory.listing(route.receiver_her)
            if listing.refusal is not None:
                raise UnknownReceiver(f"The {who} cannot be reached: {listing.refusal}")
            return route, listing.name
        return route, ""

    # -- who sent a received message -------------------------------------------------------------------

    def sender(self, her_ids: Iterable[str], transport_sender: str, via: str) -> Party | None:
        """The party a received message is from: the one party of the register its sender's HER-ids name -
        or, over the default route's channel (which vouches for the sender: NHN authenticates it), a party
        outside the register, named by the transport's sender HER-id. None when it cannot be told (or the
        chain names one of ours inconsistently)."""
        ids = list(her_ids)
        party = self.register.attribute(ids)
        if party is not None:
            return party
        if not (via and via == self.default_adapter and is_her_id(transport_sender) and transport_sender in ids):
            return None
        if any(self.register.get(i) or self.register.organisation(i) for i in ids):
            return None  # one of ours named beside an outsider: not for the default route to vouch for
        organisation = next((i for i in ids if i != transport_sender), "")
        return Party(transport_sender, f"HER-id {transport_sender}", "remote", Organisation(organisation, ""),
                     local=False, adapter=via)  # fmt: skip

    # -- AppRecs: back to the original's sender ------------------------------------------------------

    def reply(self, original: Envelope) -> Route | None:
        """The route an AppRec for ``original`` takes: to its sender, as any message to that party would."""
        return self.route(original.sender.her_ids if original.sender else ())

    # -- inbound: which local party takes a message --------------------------------------------------

    def addressed(self, envelope: Envelope, to_her: str) -> Addressed | None:
        """Which local party takes a received message, as whom, in which role - and the error when the
        transport and the message disagree about the receiver; None when it is none of ours.

        The transport's receiver and the message's must be the same local party. When they differ the
        message is answered E10 (HITS 1216 §2.2.3) by the local party the transport named, or - when the
        transport named none of ours - by the local party the message names; a message for an unknown
        service of one of our organisations is answered E21 by that organisation."""
        register = self.register
        me, role = _addressee(envelope, to_her)
        named = me or envelope.receiver
        named_party = register.attribute(named.her_ids) if named is not None else None
        if named is not None and named_party is not None and named_party.local and named_party.her_id == (
            to_her or named_party.her_id
        ):
            return Addressed(named_party, named, role)  # plainly ours: the AppRec mirrors the receiver as named
        taker = register.get(to_her)
        if taker is not None and taker.local:
            mismatch = MetadataMismatch(
                f"The transport addresses HER-id {to_her}, but the message names no such receiver."
            )
            return Addressed(taker, addressee_of(taker), "PRIM", mismatch)
        if named is not None and named_party is not None and named_party.local:
            mismatch = MetadataMismatch(
                f"The transport addresses HER-id {to_her}, but the message is for {named_party.her_id}."
            )
            return Addressed(named_party, named, role, mismatch)
        org = named.organisation_her_id if named is not None else None
        if not register.is_local_organisation(org):
            return None
        taker = next(p for p in register.local_parties if p.organisation.her_id == org)
        unknown = UnknownReceiver(
            f"The receiving service (HER-id {', '.join(named.her_ids) if named else to_her}) is "
            f"not registered at {taker.organisation.name}."
        )
        return Addressed(taker, addressee_of(taker), role if me is not None else "PRIM", unknown)

    def answering(self, envelope: Envelope, party: Party) -> tuple[Addressee, str]:
        """As whom, and in which role, ``party`` answers ``envelope`` (an AppRec its EHR decides)."""
        if envelope.receiver is not None and party.her_id in envelope.receiver.her_ids:
            return envelope.receiver, "PRIM"
        for copy in envelope.copies:
            if party.her_id in copy.her_ids:
                return copy, "COP"
        return addressee_of(party), "PRIM"


def _addressee(envelope: Envelope, to_her: str) -> tuple[Addressee | None, str]:
    """Which of the message's receivers the packet is for: the primary or a copy receiver."""
    if envelope.receiver is not None and (not to_her or to_her in envelope.receiver.her_ids):
        return envelope.receiver, "PRIM"
    for copy in envelope.copies:
        if to_her in copy.her_ids:
            return copy, "COP"
    return None, "PRIM"


def addressee_of(party: Party) -> Addressee:
    """A registered party as an AppRec names it: its organisation, and the party as a service under it."""
    return Addressee(
        party.organisation.name,
        (Ident(party.organisation.her_id, "HER"),),
        (Unit("service", party.name, (Ident(party.her_id, "HER"),)),),
    )



