"""CMS message protection and certificate trust (NHN AMQP profile, HITS 1216).

Part of the framework-free core: no HTTP client, no store, no adapters. One job per module:

    protection.py  what the pipeline calls: SignThenEncrypt / NoProtection, build_protection
    cms.py         making packets: SignedData then EnvelopedData (cryptography's PKCS#7 builders)
    cms_decrypt.py opening packets: decrypt EnvelopedData (asn1crypto + cryptography primitives)
    cms_verify.py  verifying SignedData
    cms_ids.py     how CMS names certificates and digests (shared by the two)
    trust.py       validity, key usage, path to a trust anchor, revocation
    crl.py         the CRL cache: read without I/O, refreshed by the scheduler
    keys.py        every party's certificates and the local parties' keys, loaded once
    certs.py       a certificate with where it came from, for error messages operators can act on
    devpki.py      the dev PKI: test CA, CRL, party certificates; minting and revoking for tests

See docs/security.md.
"""

from gateway.security.certs import CertRef
from gateway.security.cms import CONTENT_TYPE
from gateway.security.crl import CrlCache, CrlStatus, Fetcher
from gateway.security.devpki import ensure_dev_pki, init_dev_pki
from gateway.security.keys import CertificateInfo, KeyStore
from gateway.security.protection import (
    MessageProtection,
    NoProtection,
    SignThenEncrypt,
    Verified,
    build_protection,
    build_sign_then_encrypt,
)
from gateway.security.trust import TrustValidator

__all__ = [
    "CONTENT_TYPE",
    "CertRef",
    "CertificateInfo",
    "CrlCache",
    "CrlStatus",
    "Fetcher",
    "KeyStore",
    "MessageProtection",
    "NoProtection",
    "SignThenEncrypt",
    "TrustValidator",
    "Verified",
    "build_protection",
    "build_sign_then_encrypt",
    "ensure_dev_pki",
    "init_dev_pki",
]
