"""Message protection as the pipeline sees it: ``protect`` outbound, ``unprotect`` inbound.

:class:`SignThenEncrypt` is the NHN AMQP profile (HITS 1216, Helsenorge.Messaging's
SignThenEncryptMessageProtection): sign with the sender's enterprise certificate, encrypt to the
receiver's. :class:`NoProtection` is its null object for unit tests and local deliveries.

Everything here is synchronous and does no I/O after :func:`build_protection`: keys, certificates and
CRL files are read once there, and certificate checks read the CRL cache, which the scheduler refreshes
through :meth:`SignThenEncrypt.refresh_crls`. The pipeline may run these CPU-bound calls in a thread.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from gateway.config import Settings
from gateway.errors import ConfigError, InvalidCms, SecurityError, SpoofingDetected, UnverifiedPacket
from gateway.log import get_logger
from gateway.registry import Register
from gateway.security import cms, cms_decrypt, cms_verify
from gateway.security.certs import CertRef, load_certificates_file, utc
from gateway.security.crl import CrlCache, CrlStatus, Fetcher
from gateway.security.keys import CertificateInfo, KeyPair, KeyStore
from gateway.security.trust import TrustValidator

__all__ = [
    "MessageProtection",
    "NoProtection",
    "SignThenEncrypt",
    "Verified",
    "build_protection",
    "build_sign_then_encrypt",
]

log = get_logger("gateway.security")


@dataclass(frozen=True)
class Verified:
    """An opened inbound packet: the content byte for byte as signed, and who verifiably signed it.

    ``untrusted`` is set when the signature verified with the sender's registered certificate but that
    certificate fails trust (S02: expired, not yet valid, wrong key usage, no path to an anchor; S03:
    revoked): the content is what the registered sender signed, so it may be read and answered with that
    code, but never accepted."""

    content: bytes
    signer_her: str  # the party the verified signer certificate belongs to
    subject: str  # signer certificate subject (RFC 4514)
    serial: str  # hex
    issuer: str
    previous_key: bool = False  # decrypted with the receiver's previous key (certificate rollover)
    untrusted: SecurityError | None = None


@runtime_checkable
class MessageProtection(Protocol):
    """What the pipeline calls; one instance per process, built by :func:`build_protection`."""

    content_type: str

    def protect(self, content: bytes, *, sender_her: str, receiver_her: str, at: datetime | None = None) -> bytes: ...

    def unprotect(
        self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: datetime | None = None
    ) -> Verified: ...

    def certificates(self) -> list[CertificateInfo]: ...

    def learn(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None: ...

    def knows(self, her_id: str) -> bool: ...

    def crl_status(self) -> list[CrlStatus]: ...

    async def refresh_crls(self, fetch: Fetcher) -> None: ...


class NoProtection:
    """The null object: packets are the XML itself, and the claimed sender is taken at its word."""

    content_type = "application/xml"

    def protect(self, content: bytes, *, sender_her: str, receiver_her: str, at: datetime | None = None) -> bytes:
        return content

    def unprotect(
        self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: datetime | None = None
    ) -> Verified:
        return Verified(packet, claimed_sender_her, subject="", serial="", issuer="")

    def certificates(self) -> list[CertificateInfo]:
        return []

    def learn(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None:
        return None

    def knows(self, her_id: str) -> bool:
        return True  # every claimed sender is taken at its word

    def crl_status(self) -> list[CrlStatus]:
        return []

    async def refresh_crls(self, fetch: Fetcher) -> None:
        return None


class SignThenEncrypt:
    """CMS SignedData then EnvelopedData, with certificate trust and the spoofing check."""

    content_type = cms.CONTENT_TYPE

    def __init__(self, keys: KeyStore, trust: TrustValidator, *, allow_3des: bool = False) -> None:
        self.keys = keys
        self.trust = trust
        self.allow_3des = allow_3des

    # --- outbound ----------------------------------------------------------------------------------

    def protect(self, content: bytes, *, sender_her: str, receiver_her: str, at: datetime | None = None) -> bytes:
        """Sign ``content`` as ``sender_her`` and encrypt it to ``receiver_her``.

        Both certificates are checked first: an expired receiver certificate (CertificateExpired) is a
        permanent failure of this message, an unreachable CRL (RevocationUnavailable) a temporary one.
        """
        when = utc(at)
        signer = self.keys.signer(sender_her)
        recipient = self.keys.encryption_cert(receiver_her)
        self.trust.validate(signer.ref, purpose="sign", at=when)
        self.trust.validate(recipient, purpose="encrypt", at=when)
        return cms.sign_then_encrypt(content, signer, recipient)

    # --- inbound -----------------------------------------------------------------------------------

    def unprotect(
        self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: datetime | None = None
    ) -> Verified:
        """What a peer's packet gets: :meth:`open`, with every failure before a verified signature turned
        into the one :class:`UnverifiedPacket`. Its cause is kept on it for the log - and once a private key
        has been used on the packet, that cause is one and the same too, unless another party's registered
        certificate verifiably made the signature (which no tampering with ciphertext can bring about).
        Temporary problems on our side (a missing key, a CRL out of reach) stay what they are."""
        unverified = UnverifiedPacket()
        try:
            return self.open(packet, receiver_her=receiver_her, claimed_sender_her=claimed_sender_her, at=at)
        except SecurityError as exc:
            if exc.retryable:
                raise
            if isinstance(exc, SpoofingDetected) and exc.signed_by:
                unverified.cause, unverified.reason = exc.event, f"signed by party {exc.signed_by}"
            elif exc.key_used:
                unverified.cause, unverified.reason = unverified.event, "it did not decrypt and verify"
            else:
                unverified.cause, unverified.reason = exc.event, exc.reason or exc.event
        except Exception:  # hostile input that a parser below did not expect: a bug, but no answer to tell
            log.exception("security.unexpected", code="security.unexpected", receiver=receiver_her)
            unverified.cause, unverified.reason = "gateway.unexpected", "an unexpected error while opening it"
        raise unverified

    def open(
        self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: datetime | None = None
    ) -> Verified:
        """Decrypt for ``receiver_her``, verify the signature with ``claimed_sender_her``'s registered
        signing certificate (and nothing else), then validate that certificate (chain, dates, key usage,
        CRL). Raises the specific cause (for tools and tests; peers get :meth:`unprotect`).

        Whether the signer is the claimed sender is settled before anything is trusted: a signature by
        any other certificate is spoofing and never answered, so nobody can make this gateway send signed
        S02 AppRecs to a party of its choice with a self-made certificate. Only the sender's own
        certificate failing trust is S02/S03, on :attr:`Verified.untrusted`."""
        registered = self.keys.verifiers(claimed_sender_her)  # KeyUnavailable: one not known yet, the packet waits
        if not registered:  # refused before any private-key operation: nothing it sends can verify
            raise SpoofingDetected(f"No signing certificate is registered for the claimed sender {claimed_sender_her}.")
        inner, used = self._decrypt(packet, receiver_her)
        try:
            signed = cms_verify.verify(inner, signers=registered)
        except InvalidCms:  # garbage after decryption: as any other decryption failure (no padding oracle)
            raise cms_decrypt.decryption_failed(receiver_her, "the decrypted content is not a SignedData") from None
        except SpoofingDetected as exc:
            exc.signed_by = self._signed_by_another(inner, claimed_sender_her, receiver_her)
            exc.key_used = True
            raise
        except SecurityError as exc:
            exc.key_used = True
            raise
        return self._verified(signed, claimed_sender_her, used, utc(at))

    def identify(self, packet: bytes, *, receiver_her: str, at: datetime | None = None) -> Verified:
        """Like :meth:`open`, for tools that have no claimed sender: the sender is the party whose
        registered signing certificate signed the packet, and a signer that is no party's is refused."""
        inner, used = self._decrypt(packet, receiver_her)
        signed = cms_verify.verify(inner, signers=self.keys.signing_certs())
        owner = self.keys.owner_of_signing_cert(signed.signer)
        assert owner is not None  # every certificate offered is a party's
        return self._verified(signed, owner, used, utc(at))

    def _decrypt(self, packet: bytes, receiver_her: str) -> tuple[bytes, KeyPair]:
        keys = self.keys.decryptors(receiver_her)
        return cms_decrypt.decrypt(packet, keys, receiver=receiver_her, allow_3des=self.allow_3des)

    def _verified(self, signed: cms_verify.SignedContent, signer_her: str, used: KeyPair, at: datetime) -> Verified:
        """The opened packet, with the trust verdict on its (verified) signer certificate."""
        if used.previous:  # said only now: before the signature verified, it would tell a good padding
            log.info("security.previous_key_used", code="security.previous_key_used", signer=signer_her)
        previous = used.previous
        untrusted = None
        try:
            self.trust.validate(signed.signer, purpose="sign", at=at, intermediates=signed.certificates)
        except SecurityError as exc:
            if exc.retryable:  # the revocation status cannot be had now: the peer keeps the packet
                raise
            untrusted = exc
        ref = signed.signer
        return Verified(signed.content, signer_her, ref.subject, ref.serial, ref.issuer, previous, untrusted)

    def _signed_by_another(self, inner: bytes, claimed: str, receiver: str) -> str | None:
        """Whether another party's registered certificate verifiably made the signature - and if so, which
        party (logged at error level: someone poses as ``claimed``). Decided from the register only; the
        packet's own certificates are never believed."""
        try:
            signer = cms_verify.verify(inner, signers=self.keys.signing_certs()).signer
        except SecurityError:
            return None
        owner = self.keys.owner_of_signing_cert(signer)
        log.error(
            "security.spoofing_attack",
            code="security.spoofing_attack",
            claimed_sender=claimed,
            receiver=receiver,
            signed_by_party=owner,
        )
        return owner

    # --- operations --------------------------------------------------------------------------------

    def certificates(self) -> list[CertificateInfo]:
        """Every configured certificate (parties' and trust anchors') with its expiry."""
        anchors = [CertificateInfo.of(a, her_id=None, role="trust-anchor") for a in self.trust.anchors]
        return self.keys.certificates() + anchors

    def learn(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None:
        """A remote party's certificates from a transport's source (its CPP/CPA), where the files give none
        (:meth:`KeyStore.learn`); they are checked for trust like any other, each time they are used."""
        self.keys.learn(her_id, signing=signing, encryption=encryption)

    def knows(self, her_id: str) -> bool:
        """Whether ``her_id`` is a remote party of the register: whose certificates a source may give."""
        return self.keys.knows(her_id)

    def crl_status(self) -> list[CrlStatus]:
        return self.trust.crls.status()

    async def refresh_crls(self, fetch: Fetcher) -> None:
        """Re-read CRL files and fetch CRL URLs; the scheduler calls this every ``crl_refresh_s``."""
        await self.trust.crls.refresh(fetch)


def build_protection(
    settings: Settings, register: Register, *, private_keys_for: Collection[str] | None = None
) -> MessageProtection:
    """The configured protection, with keys, certificates and CRL files loaded once.

    ``private_keys_for`` limits which local parties' private keys are parsed (tools acting for one
    party); the gateway leaves it None and loads them all.
    """
    if settings.security.protection == "none":
        return NoProtection()
    return build_sign_then_encrypt(settings, register, private_keys_for=private_keys_for)


def build_sign_then_encrypt(
    settings: Settings, register: Register, *, private_keys_for: Collection[str] | None = None
) -> SignThenEncrypt:
    """:class:`SignThenEncrypt` from the settings, whatever ``security.protection`` says (tools)."""
    security = settings.security
    anchors: list[CertRef] = []
    for path in security.trust_anchors:
        anchors.extend(load_certificates_file(settings.in_data_dir(path)))
    if not anchors:
        raise ConfigError("security.trust_anchors lists no CA certificate; nothing could be trusted.")
    crls = CrlCache(security.crls, base=settings.data_dir, timeout_s=security.crl_timeout_s)
    crls.load_files()
    if not crls.enabled:
        log.warning("security.revocation_off", code="security.revocation_off")
    keys = KeyStore.load(register, settings.in_data_dir("pki"), private_keys_for=private_keys_for)
    return SignThenEncrypt(keys, TrustValidator(anchors, crls), allow_3des=security.allow_3des)
