"""Certificates of remote parties learned while the gateway runs, from a transport's own source (the amqp
transport: the party's CPP/CPA, docs/cppa.md) - kept apart from the files the key store loads at start.

Per party and role the two certificates offered most lately are kept, newest first: a party's certificate
is the same in every agreement it has, except while it is being renewed, when one CPA may already name the
new certificate and another still the old. Keeping both means neither an alternation between two lookups
nor a packet signed just before the renewal fails to verify; the newest one is what is encrypted to. A
third certificate pushes the oldest out (and with it, its place in the signer index).

Every change is logged (a certificate whose subject is not the one it replaces at warning level, since a
party's subject seldom changes). Nothing here checks trust: the key store's users do that on every use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.log import get_logger
from gateway.security.certs import CertRef

__all__ = ["KEPT", "Identity", "Learned", "LearnedCertificates", "Role"]

log = get_logger("gateway.security.keys")

#: certificates kept per party and role (the current one and the one it replaced)
KEPT = 2

#: issuer, serial and public key (:meth:`CertRef.identity`): what makes two encodings the same certificate
Identity = tuple[bytes, int, bytes]
Role = Literal["sign", "encrypt"]


@dataclass(frozen=True)
class Learned:
    """A party's learned certificates, newest first (empty: none learned)."""

    signing: tuple[CertRef, ...] = ()
    encryption: tuple[CertRef, ...] = ()


_NONE = Learned()


class LearnedCertificates:
    """The learned certificates of every party, and whose each learned signing certificate is. An entry is
    replaced whole, so a reader in another thread sees the old one or the new one."""

    def __init__(self) -> None:
        self._by_party: dict[str, Learned] = {}
        self._owners: dict[Identity, str] = {}

    def of(self, her_id: str) -> Learned:
        return self._by_party.get(her_id, _NONE)

    def owner(self, identity: Identity) -> str | None:
        """The party a learned signing certificate was learned for (the first, where several share it)."""
        return self._owners.get(identity)

    def parties(self) -> list[str]:
        return list(self._by_party)

    def offer(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None:
        """Take what a source offers for ``her_id`` (None: that role not offered; what was learned stays)."""
        before = self.of(her_id)
        after = Learned(
            _kept(her_id, "sign", signing, before.signing),
            _kept(her_id, "encrypt", encryption, before.encryption),
        )
        if after == before:
            return
        self._by_party[her_id] = after
        dropped = {ref.identity() for ref in before.signing} - {ref.identity() for ref in after.signing}
        for identity in dropped:
            if self._owners.get(identity) == her_id:
                del self._owners[identity]
        for ref in after.signing:
            self._owners.setdefault(ref.identity(), her_id)


def _kept(her_id: str, role: Role, offered: CertRef | None, kept: tuple[CertRef, ...]) -> tuple[CertRef, ...]:
    """The certificates to keep for one role once ``offered`` is taken: it first, then the rest, at most KEPT."""
    if offered is None:
        return kept
    known = next((ref for ref in kept if ref.fingerprint == offered.fingerprint), None)
    if known is not None:  # offered again (by another agreement, say): the newest again, quietly
        return (known, *(ref for ref in kept if ref is not known))
    fields = {"her_id": her_id, "role": role, "certificate": offered.describe()}
    if kept and kept[0].subject != offered.subject:
        log.warning(
            "security.certificate_subject_changed",
            code="security.certificate_subject_changed",
            replaces=kept[0].describe(),
            **fields,
        )
    else:
        log.info("security.certificate_learned", **fields)
    return (offered, *kept)[:KEPT]
