"""How CMS names things: a certificate (issuer and serial, or subject key identifier) and a digest.

Shared by :mod:`gateway.security.cms_decrypt` (which RecipientInfo is ours) and
:mod:`gateway.security.cms_verify` (which certificate made the signature). Names come from hostile packets,
so they are bounded before they are compared.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.errors import InvalidCms

__all__ = ["Identifier", "hash_named"]

#: A certificate's issuer name as a packet names it; a longer one is refused before it is compared (the
#: RFC 5280 comparison prepares strings in pure Python, so a huge name is CPU an attacker gets for free).
_MAX_NAME_BYTES = 1024

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_named(name: str) -> hashes.HashAlgorithm | None:
    """The hash asn1crypto calls ``name`` (sha1, sha256, ...), or None when it is not accepted."""
    factory = _HASHES.get(name)
    return factory() if factory else None


@dataclass(frozen=True)
class Identifier:
    """How CMS names a certificate: issuer and serial number, or subject key identifier."""

    issuer: ax509.Name | None = None
    serial: int | None = None
    key_id: bytes | None = None

    @classmethod
    def of(cls, choice: Any) -> Identifier:
        if choice.name == "issuer_and_serial_number":
            issuer = choice.chosen["issuer"]
            if len(issuer.contents or b"") > _MAX_NAME_BYTES:
                raise InvalidCms(f"A certificate is named by an issuer of more than {_MAX_NAME_BYTES} bytes.")
            return cls(issuer=issuer, serial=choice.chosen["serial_number"].native)
        key_id = choice.chosen.native
        if not isinstance(key_id, bytes) or len(key_id) > 64:
            raise InvalidCms("A certificate is named by a subject key identifier of more than 64 bytes.")
        return cls(key_id=key_id)

    def identifies(self, cert: x509.Certificate) -> bool:
        try:
            if self.key_id is not None:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
                return hmac.compare_digest(ski, self.key_id)
            return self.serial == cert.serial_number and _same_name(self.issuer, cert.issuer.public_bytes())
        except Exception:  # no SKI, or a name or extension that does not parse: not this certificate
            return False

    def __str__(self) -> str:
        if self.key_id is not None:
            return f"subject key identifier {self.key_id.hex()}"
        assert self.issuer is not None and self.serial is not None
        try:
            issuer = repr(self.issuer.human_friendly)
        except Exception:  # a name from hostile input that does not parse: show its bytes
            issuer = self.issuer.dump().hex()
        return f"issuer={issuer} serial={self.serial:x}"


def _same_name(name: ax509.Name, der: bytes) -> bool:
    """Equal distinguished names: the same bytes (the usual case, and fast), else RFC 5280 comparison
    (string preparation, case folding - correct, and about a millisecond in asn1crypto)."""
    return bool(name.dump() == der or name == ax509.Name.load(der))
