"""Making the CMS packet of the NHN AMQP profile (HITS 1216 §2.1.5): sign, then encrypt.

Both steps use ``cryptography``'s PKCS#7 builders, which produce exactly the profile:

* SignedData, content embedded, RSA PKCS#1 v1.5 with SHA-256, the signer certificate included and the
  signer identified by issuer and serial number. The ``Binary`` option matters: without it the builder
  canonicalises line endings to CRLF (S/MIME text mode) and the receiver would get other bytes than the
  sender wrote - fatal for XML that carries CRLF or is hashed downstream.
* EnvelopedData of the DER SignedData to the receiver's encryption certificate, AES-256-CBC content
  encryption (Helsenorge's default), RSA PKCS#1 v1.5 key transport, recipient by issuer and serial.

The reverse direction needs what the builders do not offer (signature verification, OAEP, AES-192,
optional 3DES); it lives in :mod:`gateway.security.cms_decrypt` and :mod:`gateway.security.cms_verify`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.security.certs import CertRef
from gateway.security.keys import KeyPair

__all__ = ["CONTENT_TYPE", "encrypt", "sign", "sign_then_encrypt"]

#: The AMQP contentType of a signed-then-encrypted packet (HITS 1216).
CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"

_BINARY = [pkcs7.PKCS7Options.Binary]


def sign(content: bytes, signer: KeyPair) -> bytes:
    """DER SignedData over ``content`` exactly as given, with the signer certificate embedded."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(signer.ref.cert, signer.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, _BINARY)
    )


def encrypt(data: bytes, recipient: CertRef) -> bytes:
    """DER EnvelopedData of ``data`` to one recipient certificate, AES-256-CBC."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(data)
        .add_recipient(recipient.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, _BINARY)
    )


def sign_then_encrypt(content: bytes, signer: KeyPair, recipient: CertRef) -> bytes:
    """The whole outbound packet: ``encrypt(sign(content))``."""
    return encrypt(sign(content, signer), recipient)
