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
from gateway.errors import ConfigError, InvalidCms, SecurityError, SpoofingDetected
from gateway.log import get_logger
from gateway.registry import Register
from gateway.security import cms, cms_verify
from gateway.security.certs import CertRef, describe, load_certificates_file, utc
from gateway.security.crl import CrlCache, CrlStatus, Fetcher
from gateway.security.keys import CertificateInfo, KeyStore
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
    """An opened inbound packet: the content byte for byte as signed, and who verifiably signed it."""

    content: bytes
    signer_her: str  # the party the verified signer certificate belongs to
    subject: str  # signer certificate subject (RFC 4514)
    serial: str  # hex
    issuer: str
    previous_key: bool = False  # decrypted with the receiver's previous key (certificate rollover)


@runtime_checkable
class MessageProtection(Protocol):
    """What the pipeline calls; one instance per process, built by :func:`build_protection`."""

    content_type: str

    def protect(self, content: bytes, *, sender_her: str, receiver_her: str, at: datetime | None = None) -> bytes: ...

    def unprotect(
        self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: datetime | None = None
    ) -> Verified: ...

    def certificates(self) -> list[CertificateInfo]: ...

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
        """Decrypt for ``receiver_her``, verify the signature and digest, check that the signer is
        ``claimed_sender_her``'s registered certificate, then validate that certificate (chain, dates,
        key usage, CRL).

        The spoofing check comes before trust: a certificate that is not the claimed sender's is refused
        as spoofing and never answered, so nobody can make this gateway send signed S02 AppRecs to a
        party of its choice with a self-made certificate. Only the sender's own certificate failing trust
        is S02/S03 (with the content attached, so the pipeline can answer)."""
        registered = self.keys.signing_cert(claimed_sender_her)
        opened = self._open(packet, receiver_her, [registered] if registered else [])
        signer_her = self._check_sender(opened, claimed_sender_her, receiver_her)
        self._trust(opened, utc(at))
        return self._verified(opened, signer_her)

    def identify(self, packet: bytes, *, receiver_her: str, at: datetime | None = None) -> Verified:
        """Like :meth:`unprotect`, for tools that have no claimed sender: the sender is the party whose
        registered signing certificate signed the packet, and a signer that is no party's is refused."""
        opened = self._open(packet, receiver_her, [])
        owner = self.keys.owner_of_signing_cert(opened.signer)
        if owner is None:
            raise SpoofingDetected(f"The {describe(opened.signer)} is registered for no party of the register.")
        self._trust(opened, utc(at))
        return self._verified(opened, owner)

    def _open(self, packet: bytes, receiver_her: str, fallback: list[CertRef]) -> _Opened:
        keys = self.keys.decryptors(receiver_her)
        inner, used = cms_verify.decrypt(packet, keys, receiver=receiver_her, allow_3des=self.allow_3des)
        if used.previous:
            log.info("security.previous_key_used", code="security.previous_key_used", receiver=receiver_her)
        try:
            signed = cms_verify.verify(inner, fallback_signers=fallback)
        except InvalidCms:
            # garbage after decryption is reported as a decryption failure, so a peer cannot tell a
            # valid CBC padding from an invalid one by the answer (no padding oracle)
            raise cms_verify.decryption_failed(receiver_her) from None
        return _Opened(signed.content, signed.signer, used.previous, signed.certificates)

    def _trust(self, opened: _Opened, at: datetime) -> None:
        try:
            self.trust.validate(opened.signer, purpose="sign", at=at, intermediates=opened.intermediates)
        except SecurityError as exc:
            cms_verify.attach_content(exc, opened.content)
            raise

    def _check_sender(self, opened: _Opened, claimed: str, receiver: str) -> str:
        """The spoofing check: the verified signer must be the claimed sender's registered certificate.
        (The content is not attached to SpoofingDetected: a spoofed message is refused, never answered.)"""
        registered = self.keys.signing_cert(claimed)
        if registered is not None and registered.identity() == opened.signer.identity():
            return claimed
        owner = self.keys.owner_of_signing_cert(opened.signer)
        log.error(
            "security.spoofing_attack",
            code="security.spoofing_attack",
            claimed_sender=claimed,
            receiver=receiver,
            signer_party=owner,
            signer_subject=opened.signer.subject,
            signer_serial=opened.signer.serial,
            signer_issuer=opened.signer.issuer,
        )
        belongs = f"belongs to party {owner}" if owner else "is registered for no party"
        expected = (
            f"the registered signing {describe(registered)}"
            if registered
            else "no signing certificate, as none is registered for it"
        )
        raise SpoofingDetected(
            f"The message claims sender {claimed}, but it is signed with the {describe(opened.signer)}, which "
            f"{belongs}; {claimed} has {expected}."
        )

    @staticmethod
    def _verified(opened: _Opened, signer_her: str) -> Verified:
        ref = opened.signer
        return Verified(opened.content, signer_her, ref.subject, ref.serial, ref.issuer, opened.previous_key)

    # --- operations --------------------------------------------------------------------------------

    def certificates(self) -> list[CertificateInfo]:
        """Every configured certificate (parties' and trust anchors') with its expiry."""
        anchors = [CertificateInfo.of(a, her_id=None, role="trust-anchor") for a in self.trust.anchors]
        return self.keys.certificates() + anchors

    def crl_status(self) -> list[CrlStatus]:
        return self.trust.crls.status()

    async def refresh_crls(self, fetch: Fetcher) -> None:
        """Re-read CRL files and fetch CRL URLs; the scheduler calls this every ``crl_refresh_s``."""
        await self.trust.crls.refresh(fetch)


@dataclass(frozen=True)
class _Opened:
    content: bytes
    signer: CertRef
    previous_key: bool
    intermediates: tuple[CertRef, ...] = ()


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
