"""Certificate trust: validity period, key usage, a path to a trust anchor, and revocation.

Path building and signature checking along the chain are done by ``cryptography.x509.verification`` (a
maintained RFC 5280 validator, synchronous and free of I/O - see docs/security.md for why it and not
pyhanko-certvalidator). That validator has no revocation support, so CRLs are checked here against the
:class:`~gateway.security.crl.CrlCache` for every certificate of the built chain below its anchor.

Dates and key usage are checked first, by hand, so that the two most common operator problems get their
own error classes (CertificateExpired, CertificateKeyUsage) and plain messages, instead of being folded
into the validator's generic "no path" answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Literal

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from gateway.errors import CertificateExpired, CertificateKeyUsage, CertificateUntrusted
from gateway.security.certs import CertRef, describe
from gateway.security.crl import CrlCache

__all__ = ["Purpose", "TrustValidator", "check_key_usage", "check_validity"]

#: What a certificate is used for: signing a message, or having a message encrypted to it.
Purpose = Literal["sign", "encrypt"]

_USAGE_WORDS = {
    "sign": "nonRepudiation or digitalSignature (signing)",
    "encrypt": "keyEncipherment (encryption)",
}


def check_validity(ref: CertRef, at: datetime) -> None:
    """Raise CertificateExpired unless ``at`` lies within the certificate's validity period."""
    if at < ref.not_before:
        said = f"is not valid yet: valid from {ref.not_before:%Y-%m-%d %H:%M} UTC, checked at {at:%Y-%m-%d %H:%M} UTC."
        raise CertificateExpired(f"The {describe(ref)} {said}", public=f"The {describe(ref, source=False)} {said}")
    if at > ref.not_after:
        said = f"expired at {ref.not_after:%Y-%m-%d %H:%M} UTC (checked at {at:%Y-%m-%d %H:%M} UTC)."
        raise CertificateExpired(f"The {describe(ref)} {said}", public=f"The {describe(ref, source=False)} {said}")


def check_key_usage(ref: CertRef, purpose: Purpose) -> None:
    """Raise CertificateKeyUsage unless the certificate's key usage allows ``purpose`` (HITS 1216 §2.1.4)."""
    try:
        usage = ref.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        said = f"has no key usage extension; {_USAGE_WORDS[purpose]} is required."
        raise CertificateKeyUsage(
            f"The {describe(ref)} {said}", public=f"The {describe(ref, source=False)} {said}"
        ) from None
    allowed = usage.digital_signature or usage.content_commitment if purpose == "sign" else usage.key_encipherment
    if not allowed:
        said = f"does not allow {_USAGE_WORDS[purpose]}; its key usage is {_usage_names(usage)}."
        raise CertificateKeyUsage(f"The {describe(ref)} {said}", public=f"The {describe(ref, source=False)} {said}")


def _usage_names(usage: x509.KeyUsage) -> str:
    names = [
        ("digitalSignature", usage.digital_signature),
        ("nonRepudiation", usage.content_commitment),
        ("keyEncipherment", usage.key_encipherment),
        ("dataEncipherment", usage.data_encipherment),
        ("keyAgreement", usage.key_agreement),
        ("keyCertSign", usage.key_cert_sign),
        ("cRLSign", usage.crl_sign),
    ]
    return ", ".join(n for n, on in names if on) or "empty"


def _end_entity_not_ca(_policy: Policy, cert: x509.Certificate, value: x509.BasicConstraints | None) -> None:
    if value is not None and value.ca:
        raise ValueError("an end-entity certificate must not be a CA")


# CA certificates get the validator's RFC 5280 / CA-B Forum defaults. Enterprise certificates
# (virksomhetssertifikater) are not web server certificates: they carry no subjectAltName and their
# extended key usage varies by issuer, so for them we only forbid being a CA and check key usage ourselves.
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
_EE_POLICY = ExtensionPolicy.permit_all().may_be_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, _end_entity_not_ca
)


class TrustValidator:
    """Validates party certificates against the configured trust anchors and the CRL cache."""

    def __init__(self, anchors: Sequence[CertRef], crls: CrlCache) -> None:
        self._anchors = {a.fingerprint: a for a in anchors}
        self._store = Store([a.cert for a in anchors]) if anchors else None
        self.crls = crls

    @property
    def anchors(self) -> list[CertRef]:
        return list(self._anchors.values())

    def validate(
        self,
        ref: CertRef,
        *,
        purpose: Purpose,
        at: datetime,
        intermediates: Sequence[CertRef] = (),
    ) -> list[CertRef]:
        """The chain from ``ref`` to its anchor, or the error that says why ``ref`` cannot be trusted.

        Raises CertificateExpired, CertificateKeyUsage, CertificateUntrusted, CertificateRevoked or
        (temporary) RevocationUnavailable.
        """
        check_validity(ref, at)
        check_key_usage(ref, purpose)
        chain = self._chain(ref, intermediates, at)
        for cert, issuer in pairwise(chain):
            self.crls.check(cert, issuer, at=at)
        return chain

    def _chain(self, ref: CertRef, intermediates: Sequence[CertRef], at: datetime) -> list[CertRef]:
        if self._store is None:
            raise CertificateUntrusted(
                f"The {describe(ref)} cannot be trusted: no trust anchors are configured.",
                public=f"The {describe(ref, source=False)} does not chain to a trusted issuer here.",
            )
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(ref.cert, [i.cert for i in intermediates])
        except VerificationError as exc:
            anchors = "; ".join(f"{a.subject!r} ({a.source})" for a in self._anchors.values())
            raise CertificateUntrusted(
                f"The {describe(ref)} does not chain to a trust anchor: {_reason(exc)}. Trust anchors: {anchors}.",
                public=f"The {describe(ref, source=False)} does not chain to a trusted issuer here.",
            ) from None
        known = {**{i.fingerprint: i for i in intermediates}, **self._anchors}
        chain = [ref]
        for cert in verified.chain[1:]:
            found = CertRef(cert, "")
            chain.append(known.get(found.fingerprint, found))
        return chain


def _reason(exc: VerificationError) -> str:
    """The validator's reason without its trailing dump of the certificate object."""
    text = str(exc)
    cut = text.find(" (encountered processing")
    return text[:cut] if cut > 0 else text
