"""Certificates as the security layer handles them: each one paired with where it came from.

Operators reading an error at 03:00 need to know *which* certificate failed and *where it was found*
(a file of the register, the dev PKI, or embedded in a peer's CMS signature) - Helsenorge.Messaging users
asked for exactly that (issues #52, #670). So every certificate travels as a :class:`CertRef`, and every
error message names it through :func:`describe`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

from gateway.errors import ConfigError

__all__ = [
    "EMBEDDED",
    "CertRef",
    "describe",
    "load_certificate_file",
    "load_certificates_file",
    "name_text",
    "utc",
]

#: The source named for a certificate taken from a CMS signature.
EMBEDDED = "embedded in the CMS signature"


# short names RFC 4514 lacks, for attributes Norwegian enterprise certificates carry
_NAME_OVERRIDES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    ObjectIdentifier("2.5.4.97"): "organizationIdentifier",
}


def name_text(name: x509.Name) -> str:
    """A distinguished name as RFC 4514 text, with readable names for serialNumber and friends."""
    return name.rfc4514_string(_NAME_OVERRIDES)


def utc(at: datetime | None) -> datetime:
    """``at`` as an aware UTC time (now when not given); naive times are taken to be UTC."""
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass(frozen=True)
class CertRef:
    """A certificate and where it came from (a file path, or :data:`EMBEDDED`)."""

    cert: x509.Certificate
    source: str
    fingerprint: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        object.__setattr__(self, "fingerprint", hashlib.sha256(der).digest())

    @property
    def subject(self) -> str:
        return name_text(self.cert.subject)

    @property
    def issuer(self) -> str:
        return name_text(self.cert.issuer)

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")

    @property
    def not_before(self) -> datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def identity(self) -> tuple[bytes, int, bytes]:
        """Issuer, serial and public key: what makes two encodings the same certificate."""
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return self.cert.issuer.public_bytes(), self.cert.serial_number, spki

    def describe(self) -> str:
        return describe(self)


def describe(ref: CertRef, *, source: bool = True) -> str:
    """The words an operator needs to find a certificate: subject, serial, issuer and source (a peer is
    told the same without the source, a file path of ours)."""
    where = f" ({ref.source})" if source else ""
    return f"certificate subject={ref.subject!r} serial={ref.serial} issuer={ref.issuer!r}{where}"


def load_certificates_file(path: Path) -> list[CertRef]:
    """Every certificate in a PEM (one or more) or DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read certificate file {path}: {exc.strerror}.") from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigError(f"{path} does not hold a readable X.509 certificate: {exc}.") from None
    return [CertRef(c, str(path)) for c in certs]


def load_certificate_file(path: Path) -> CertRef:
    """The one certificate of a file (a party's signing or encryption certificate)."""
    refs = load_certificates_file(path)
    if len(refs) != 1:
        raise ConfigError(f"{path} holds {len(refs)} certificates; a party certificate file holds one.")
    return refs[0]
