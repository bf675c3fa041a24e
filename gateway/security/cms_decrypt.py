"""Opening a CMS EnvelopedData packet (asn1crypto + cryptography primitives).

``cryptography``'s PKCS#7 module decrypts only AES-128/256 with PKCS#1 v1.5 key transport; peers send
more - OAEP key transport, AES-192 and (when configured) 3DES - so decryption is written here on
asn1crypto's structures and cryptography's primitives.

* **No padding oracle.** Which of our keys opens the packet is settled before any private-key operation:
  exactly one RecipientInfo must name exactly one of them. Then one key transport and one content
  decryption are made whatever their outcome, and every failure after that point - a bad key-transport
  block, a content key of the wrong length, bad CBC padding, corrupt ciphertext - raises the same
  :class:`DecryptionFailed` with the same message. (PKCS#1 v1.5 decryption in cryptography uses implicit
  rejection; an OAEP block that does not decode continues with a random key.) Structural problems found
  *before* any key is used (not CMS at all, an algorithm the profile refuses) say what they are: they
  depend on nothing secret.
* **Bounded work.** At most :data:`MAX_RECIPIENTS` RecipientInfos, their bytes budgeted before they are
  parsed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms as acms
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

from gateway.errors import DecryptionFailed, InvalidCms
from gateway.security.cms_ids import Identifier, hash_named
from gateway.security.keys import KeyPair

__all__ = ["MAX_RECIPIENTS", "decrypt", "decryption_failed"]

#: More RecipientInfos than this is refused before any private-key operation (the profile has one).
MAX_RECIPIENTS = 16
# a byte budget per recipient, checked on the raw encoding before the list is parsed: generous for
# RSA-4096, far below what a flood of empty items needs
_MAX_RECIPIENT_BYTES = 4096

# content encryption: OID -> key length in bytes
_AES = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, "2.16.840.1.101.3.4.1.42": 32}
_DES_EDE3_CBC = "1.2.840.113549.3.7"

# key transport
_RSA_PKCS1 = "1.2.840.113549.1.1.1"
_RSA_OAEP = "1.2.840.113549.1.1.7"


def decryption_failed(receiver: str, reason: str, *, key_used: bool = True) -> DecryptionFailed:
    """The one decryption error: the same words whatever went wrong; ``reason`` (coarse, for the log and
    the tools) too, and whether a private key had been used on the packet by then."""
    error = DecryptionFailed(f"The message could not be decrypted for receiver {receiver}.")
    error.reason, error.key_used = reason, key_used
    return error


@dataclass(frozen=True)
class _Recipient:
    rid: Identifier
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
        Identifier.of(ktri["rid"]),
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
        digest = hash_named((params.get("hash_algorithm") or {}).get("algorithm", "sha1"))
        mgf = params.get("mask_gen_algorithm") or {}
        mgf_hash = hash_named((mgf.get("parameters") or {}).get("algorithm", "sha1"))
        label = (params.get("p_source_algorithm") or {}).get("parameters") or None
        if digest is None or mgf_hash is None or mgf.get("algorithm", "mgf1") != "mgf1":
            raise InvalidCms("The OAEP key transport parameters name a hash or mask function not accepted.")
        return padding.OAEP(mgf=padding.MGF1(mgf_hash), algorithm=digest, label=label)
    raise InvalidCms(f"Key transport algorithm {recipient.transport} is not accepted (RSA PKCS#1 v1.5 or OAEP).")


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
