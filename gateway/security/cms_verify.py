"""Opening a CMS packet: decrypt EnvelopedData and verify SignedData (asn1crypto + cryptography primitives).

``cryptography``'s PKCS#7 module signs and encrypts, but it cannot verify a signature and decrypts only
AES-128/256 with PKCS#1 v1.5 key transport. Peers send more than that - OAEP key transport, AES-192,
SHA-1 signatures, signatures with and without signed attributes, and (when configured) 3DES - so the
inbound direction is written here on asn1crypto's CMS structures and cryptography's primitives.

Two rules shape this module:

* **No padding oracle.** Once a private key has been used, every failure - no recipient for our keys,
  bad key transport padding, wrong content key length, bad CBC padding, corrupt ciphertext - raises the
  same :class:`DecryptionFailed` with the same message. (PKCS#1 v1.5 decryption in cryptography uses
  implicit rejection, so a bad key transport block yields a random key and fails later, the same way.)
  The detail goes to the log only. Structural problems found *before* any key is used (not CMS at all, an
  algorithm the profile refuses) say what they are: they depend on nothing secret.
* **Only the claimed sender's certificate verifies.** The SignerInfo must name one of the certificates
  the caller offers (the claimed sender's registered one); a certificate embedded in the packet is never
  used to verify anything, only - after verification - as a candidate intermediate for the chain.
* **Bounded work.** At most :data:`MAX_RECIPIENTS` RecipientInfos and one private-key operation per key of
  ours, whatever a packet lists; at most :data:`MAX_CERTIFICATES` embedded certificates.
* **Nothing decrypted in an error.** Failures inside the decrypted structure say which check failed in
  fixed words; they never quote the decrypted bytes.
* **Content byte for byte.** The eContent octets are returned as signed; nothing is re-encoded.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

from gateway.errors import DecryptionFailed, InvalidCms, SignatureInvalid, SpoofingDetected
from gateway.security.certs import EMBEDDED, CertRef, describe, name_text
from gateway.security.keys import KeyPair

__all__ = [
    "MAX_CERTIFICATES",
    "MAX_RECIPIENTS",
    "SignedContent",
    "decrypt",
    "decryption_failed",
    "verify",
]

#: More RecipientInfos than this is refused before any private-key operation (the profile has one).
MAX_RECIPIENTS = 16
#: More certificates embedded in the SignedData than this is refused (the profile embeds the signer's).
MAX_CERTIFICATES = 8

# Byte budgets checked on the raw encoding *before* a list is parsed (counting its items parses them all):
# generous for real RSA-4096 recipients and certificates, far below what a flood of empty items needs.
_MAX_RECIPIENT_BYTES = 4096
_MAX_CERTIFICATE_BYTES = 16384
_MAX_SIGNER_INFOS_BYTES = 16384
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

# content encryption: OID -> key length in bytes
_AES = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, "2.16.840.1.101.3.4.1.42": 32}
_DES_EDE3_CBC = "1.2.840.113549.3.7"

# key transport
_RSA_PKCS1 = "1.2.840.113549.1.1.1"
_RSA_OAEP = "1.2.840.113549.1.1.7"

# signature algorithm OID -> the hash it names (rsaEncryption names none: the digestAlgorithm's is used)
_RSA_SIGNATURES = {
    _RSA_PKCS1: None,
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}


def decryption_failed(receiver: str, reason: str, *, key_used: bool = True) -> DecryptionFailed:
    """The one decryption error: the same words whatever went wrong; ``reason`` (coarse, for the log and
    the tools) too, and whether a private key had been used on the packet by then."""
    error = DecryptionFailed(f"The message could not be decrypted for receiver {receiver}.")
    error.reason, error.key_used = reason, key_used
    return error


# --- decryption --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identifier:
    """How CMS names a certificate: issuer and serial number, or subject key identifier."""

    issuer: ax509.Name | None = None
    serial: int | None = None
    key_id: bytes | None = None

    @classmethod
    def of(cls, choice: Any) -> _Identifier:
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


@dataclass(frozen=True)
class _Recipient:
    rid: _Identifier
    transport: str
    transport_params: Any
    encrypted_key: bytes


@dataclass(frozen=True)
class _Envelope:
    algorithm: str
    iv: bytes
    ciphertext: bytes
    recipients: list[_Recipient]


def _parse_envelope(packet: bytes) -> _Envelope:
    """The fields of an EnvelopedData packet; InvalidCms when it is not one."""
    try:
        info = acms.ContentInfo.load(packet, strict=True)
        if info["content_type"].native != "enveloped_data":
            raise InvalidCms(f"Expected CMS EnvelopedData, got {info['content_type'].native}.")
        enveloped = info["content"]
        content = enveloped["encrypted_content_info"]
        if content["encrypted_content"].native is None:
            raise InvalidCms("The EnvelopedData carries no encrypted content.")
        algorithm = content["content_encryption_algorithm"]
        params = algorithm["parameters"].native
        infos = enveloped["recipient_infos"]
        if len(infos.contents or b"") > MAX_RECIPIENTS * _MAX_RECIPIENT_BYTES or len(infos) > MAX_RECIPIENTS:
            raise InvalidCms(f"The EnvelopedData lists more recipients than the {MAX_RECIPIENTS} read.")
        return _Envelope(
            algorithm=algorithm["algorithm"].dotted,
            iv=params if isinstance(params, bytes) else b"",
            ciphertext=content["encrypted_content"].native,
            recipients=[_recipient(r.chosen) for r in infos if r.name == "ktri"],
        )
    except InvalidCms:
        raise
    except Exception as exc:  # asn1crypto parses lazily; any failure of hostile input means "not CMS"
        raise InvalidCms(f"The packet is not a readable CMS EnvelopedData structure: {exc}") from None


def _recipient(ktri: acms.KeyTransRecipientInfo) -> _Recipient:
    algorithm = ktri["key_encryption_algorithm"]
    return _Recipient(
        _Identifier.of(ktri["rid"]),
        algorithm["algorithm"].dotted,
        algorithm["parameters"].native,
        ktri["encrypted_key"].native,
    )


def _cipher(env: _Envelope, allow_3des: bool) -> tuple[Callable[[bytes], BlockCipherAlgorithm], int]:
    """The content cipher and its key length, or InvalidCms if the profile refuses the algorithm."""
    if env.algorithm in _AES:
        return algorithms.AES, _AES[env.algorithm]
    if env.algorithm == _DES_EDE3_CBC:
        if not allow_3des:
            raise InvalidCms(
                "The content is encrypted with 3DES, which this gateway refuses (security.allow_3des = false); "
                "use AES-256-CBC."
            )
        return TripleDES, 24
    raise InvalidCms(
        f"Content encryption algorithm {env.algorithm} is not accepted; use AES-256-CBC "
        f"(AES-128/192/256-CBC are accepted{', and 3DES' if allow_3des else ''})."
    )


def _key_transport(recipient: _Recipient) -> padding.AsymmetricPadding:
    """PKCS#1 v1.5 or OAEP (with its hash, MGF1 hash and label); InvalidCms for anything else."""
    try:
        return _padding_of(recipient)
    except InvalidCms:
        raise
    except Exception:  # parameters of a shape nobody writes: not of the profile
        raise InvalidCms("The key transport parameters do not read.") from None


def _padding_of(recipient: _Recipient) -> padding.AsymmetricPadding:
    if recipient.transport == _RSA_PKCS1:
        return padding.PKCS1v15()
    if recipient.transport == _RSA_OAEP:
        params = recipient.transport_params or {}
        digest = _hash((params.get("hash_algorithm") or {}).get("algorithm", "sha1"))
        mgf = params.get("mask_gen_algorithm") or {}
        mgf_hash = _hash((mgf.get("parameters") or {}).get("algorithm", "sha1"))
        label = (params.get("p_source_algorithm") or {}).get("parameters") or None
        if digest is None or mgf_hash is None or mgf.get("algorithm", "mgf1") != "mgf1":
            raise InvalidCms("The OAEP key transport parameters name a hash or mask function not accepted.")
        return padding.OAEP(mgf=padding.MGF1(mgf_hash), algorithm=digest, label=label)
    raise InvalidCms(f"Key transport algorithm {recipient.transport} is not accepted (RSA PKCS#1 v1.5 or OAEP).")


def _hash(name: str) -> hashes.HashAlgorithm | None:
    factory = _HASHES.get(name)
    return factory() if factory else None


def decrypt(
    packet: bytes, keys: Sequence[KeyPair], *, receiver: str, allow_3des: bool = False
) -> tuple[bytes, KeyPair]:
    """The plaintext of an EnvelopedData packet and the key pair that opened it.

    Exactly one RecipientInfo must name exactly one of ``keys``; that is settled before any private-key
    operation, and then one key transport and one content decryption are made, whatever their outcome.
    (Trying another key after a bad padding would let the padding steer how much work is done - a timing
    oracle - and let a packet listing many of our certificates buy many RSA operations.)

    Raises InvalidCms for a packet that is not of the profile, DecryptionFailed "no recipient" when no
    single key of ours is named (both before any key is used), and DecryptionFailed - one message - for
    every failure after.
    """
    env = _parse_envelope(packet)
    cipher, key_length = _cipher(env, allow_3des)
    named = [(r, pair) for r in env.recipients for pair in keys if r.rid.identifies(pair.ref.cert)]
    if len(named) != 1:
        reason = "no recipient for our keys" if not named else "more than one recipient names our keys"
        raise decryption_failed(receiver, reason, key_used=False)
    ((recipient, pair),) = named
    transport = _key_transport(recipient)
    try:
        content_key = pair.key.decrypt(recipient.encrypted_key, transport)
    except Exception:  # OAEP refuses a bad block by raising: carry on with a key that fails like any other
        content_key = b""
    if len(content_key) != key_length:  # (PKCS#1 v1.5 decrypts with implicit rejection: a random "key")
        content_key = os.urandom(key_length)
    try:
        return _decrypt_content(cipher(content_key), env), pair
    except Exception:  # whatever the cause, it must look like every other failure (no oracle)
        raise decryption_failed(receiver, "key transport or content decryption failed") from None


def _decrypt_content(algorithm: BlockCipherAlgorithm, env: _Envelope) -> bytes:
    block_bits = algorithm.block_size
    if len(env.iv) * 8 != block_bits or not env.ciphertext or len(env.ciphertext) * 8 % block_bits:
        raise ValueError("malformed content encryption")
    decryptor = Cipher(algorithm, modes.CBC(env.iv)).decryptor()
    padded = decryptor.update(env.ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(block_bits).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


# --- signature verification --------------------------------------------------------------------------


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
    sid: _Identifier
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
            sid=_Identifier.of(signer_info["sid"]),
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
    digest = _hash(signed.digest_algorithm)
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
    hash_algorithm = _hash(named) if named else digest
    assert hash_algorithm is not None  # every name in _RSA_SIGNATURES is in _HASHES
    try:
        public_key.verify(signed.signature, data, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        raise SignatureInvalid(f"The signature does not verify with the {describe(signer)}.") from None
