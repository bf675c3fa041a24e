"""Verifying a CMS SignedData (asn1crypto + cryptography primitives).

``cryptography``'s PKCS#7 module signs but cannot verify. Peers sign with SHA-1 or SHA-2, with and without
signed attributes, and name the signer by issuer and serial or by subject key identifier - so verification
is written here.

* **Only the claimed sender's certificate verifies.** The SignerInfo must name one of the certificates
  the caller offers (the claimed sender's registered one); a certificate embedded in the packet is never
  used to verify anything, only - after verification - as a candidate intermediate for the chain.
* **Bounded work.** At most :data:`MAX_CERTIFICATES` embedded certificates and one SignerInfo, their bytes
  budgeted before the lists are parsed.
* **Nothing decrypted in an error.** Failures inside the (decrypted, not yet verified) structure say which
  check failed in fixed words; they never quote the bytes.
* **Content byte for byte.** The eContent octets are returned as signed; nothing is re-encoded.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms as acms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.errors import InvalidCms, SignatureInvalid, SpoofingDetected
from gateway.security.certs import EMBEDDED, CertRef, describe, name_text
from gateway.security.cms_ids import Identifier, hash_named

__all__ = ["MAX_CERTIFICATES", "SignedContent", "verify"]

#: More certificates embedded in the SignedData than this is refused (the profile embeds the signer's).
MAX_CERTIFICATES = 8
_MAX_CERTIFICATE_BYTES = 16384
_MAX_SIGNER_INFOS_BYTES = 16384

# signature algorithm OID -> the hash it names (rsaEncryption, .1.1.1, names none: the digestAlgorithm's is used)
_RSA_SIGNATURES = {
    "1.2.840.113549.1.1.1": None,
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}


@dataclass(frozen=True)
class SignedContent:
    """A verified signature: the content as signed, the certificate that verified it, and the others
    embedded beside it (candidate intermediates for the chain, read only after the signature verified)."""

    content: bytes
    signer: CertRef
    certificates: tuple[CertRef, ...]


_CONTENT_TYPE_ATTR = "1.2.840.113549.1.9.3"
_MESSAGE_DIGEST_ATTR = "1.2.840.113549.1.9.4"


@dataclass(frozen=True)
class _Signed:
    """The fields of a SignedData with its one SignerInfo, read out once while parsing."""

    content_type: str
    content: bytes
    certificates: list[bytes]  # DER, not parsed before the signature verified
    sid: Identifier
    digest_algorithm: str  # asn1crypto's name: sha1, sha256, ...
    signature_algorithm: str  # dotted OID
    signature: bytes
    signed_attrs: bytes | None  # re-tagged as the DER SET OF the signature covers; None if absent
    attr_content_types: list[str]
    attr_message_digests: list[bytes]


def _parse_signed(data: bytes) -> _Signed:
    """The SignedData's fields. The bytes were decrypted but not yet verified, so a failure says only
    which part is wrong, never what the bytes were."""
    try:
        info = acms.ContentInfo.load(data, strict=True)
        if info["content_type"].native != "signed_data":
            raise InvalidCms("The decrypted content is not a CMS SignedData.")
        signed = info["content"]
        encap = signed["encap_content_info"]
        content = encap["content"].native
        if not isinstance(content, bytes):
            raise InvalidCms("The SignedData is detached; the profile embeds the content.")
        signer_infos = signed["signer_infos"]
        if len(signer_infos.contents or b"") > _MAX_SIGNER_INFOS_BYTES or len(signer_infos) != 1:
            raise InvalidCms("The SignedData has more or fewer signers than the one of the profile.")
        certificates = signed["certificates"]
        raw = certificates.contents if certificates else b""
        if len(raw or b"") > MAX_CERTIFICATES * _MAX_CERTIFICATE_BYTES or len(certificates or []) > MAX_CERTIFICATES:
            raise InvalidCms(f"The SignedData embeds more than {MAX_CERTIFICATES} certificates.")
        embedded = [c for c in (certificates or []) if c.name == "certificate"]
        signer_info = signer_infos[0]
        attrs = signer_info["signed_attrs"]
        values = {a["type"].dotted: a["values"] for a in attrs} if attrs else {}
        return _Signed(
            content_type=encap["content_type"].dotted,
            content=content,
            certificates=[c.chosen.dump() for c in embedded],
            sid=Identifier.of(signer_info["sid"]),
            digest_algorithm=signer_info["digest_algorithm"]["algorithm"].native,
            signature_algorithm=signer_info["signature_algorithm"]["algorithm"].dotted,
            signature=signer_info["signature"].native,
            # the signature covers the attributes as a DER SET OF, not with the [0] tag they carry here
            signed_attrs=b"\x31" + attrs.dump()[1:] if attrs else None,
            attr_content_types=[v.dotted for v in values.get(_CONTENT_TYPE_ATTR, [])],
            attr_message_digests=[v.native for v in values.get(_MESSAGE_DIGEST_ATTR, [])],
        )
    except InvalidCms:
        raise
    except Exception:  # lazy parsing of hostile input: any failure means "not CMS"
        raise InvalidCms("The decrypted content is not a readable CMS SignedData structure.") from None


def _readable(der: bytes) -> x509.Certificate:
    """A certificate whose names, key and extensions parse: cryptography reads them lazily, and a
    failure later - in trust checks or an error message - would escape as an unknown error."""
    cert = x509.load_der_x509_certificate(der)
    _ = (name_text(cert.subject), name_text(cert.issuer), cert.public_key(), cert.extensions)
    return cert


def verify(data: bytes, *, signers: Sequence[CertRef]) -> SignedContent:
    """Verify a DER SignedData with one of ``signers`` - the certificates registered for whoever may
    have signed it: the signature, and the message digest when there are signed attributes.

    The SignerInfo must name one of ``signers`` (SpoofingDetected otherwise); certificates embedded in
    the packet are never used to verify. Trust in the signer certificate is *not* decided here (see
    :mod:`gateway.security.trust`)."""
    signed = _parse_signed(data)
    signer = next((ref for ref in signers if signed.sid.identifies(ref.cert)), None)
    if signer is None:
        raise SpoofingDetected("The signature is not made with the registered signing certificate of the sender.")
    digest = hash_named(signed.digest_algorithm)
    if digest is None:
        raise SignatureInvalid(
            f"Digest algorithm {signed.digest_algorithm} is not accepted (SHA-1 or SHA-2), signer: {describe(signer)}."
        )
    _check_signature(signed, _signed_bytes(signed, digest, signer), digest, signer)
    return SignedContent(signed.content, signer, _intermediates(signed, signer))


def _intermediates(signed: _Signed, signer: CertRef) -> tuple[CertRef, ...]:
    """The embedded certificates other than the signer's that parse: candidate intermediates."""
    found = []
    for der in signed.certificates:
        try:
            ref = CertRef(_readable(der), EMBEDDED)
        except Exception:  # noqa: S112 - an embedded certificate that does not read cannot help build a chain
            continue
        if ref.fingerprint != signer.fingerprint:
            found.append(ref)
    return tuple(found)


def _signed_bytes(signed: _Signed, digest: hashes.HashAlgorithm, signer: CertRef) -> bytes:
    """What the signature covers: the content itself, or the signed attributes after checking that
    their message-digest is the content's digest and their content-type the eContentType."""
    if signed.signed_attrs is None:
        return signed.content
    if len(signed.attr_message_digests) != 1 or len(signed.attr_content_types) != 1:
        raise SignatureInvalid(
            f"The signed attributes lack content-type or message-digest; signer: {describe(signer)}."
        )
    if signed.attr_content_types[0] != signed.content_type:
        raise SignatureInvalid(
            f"The signed content-type attribute does not match the content; signer: {describe(signer)}."
        )
    hasher = hashes.Hash(digest)
    hasher.update(signed.content)
    if not hmac.compare_digest(hasher.finalize(), signed.attr_message_digests[0]):
        raise SignatureInvalid(
            f"The message digest does not match the content: the content was changed after signing "
            f"(signer: {describe(signer)})."
        )
    return signed.signed_attrs


def _check_signature(signed: _Signed, data: bytes, digest: hashes.HashAlgorithm, signer: CertRef) -> None:
    oid = signed.signature_algorithm
    public_key = signer.cert.public_key()
    if oid not in _RSA_SIGNATURES or not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureInvalid(
            f"Signature algorithm {oid} is not accepted (RSA PKCS#1 v1.5 with SHA-1 or SHA-2); "
            f"signer: {describe(signer)}."
        )
    named = _RSA_SIGNATURES[oid]
    hash_algorithm = hash_named(named) if named else digest
    assert hash_algorithm is not None  # every name in _RSA_SIGNATURES is in _HASHES
    try:
        public_key.verify(signed.signature, data, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        raise SignatureInvalid(f"The signature does not verify with the {describe(signer)}.") from None
