"""The peer bot's keys and CMS, as HM's ``SignThenEncryptMessageProtection`` does it: sign with our signing
certificate, encrypt to the receiver's encryption certificate; on receipt decrypt with ours, then check the
signature with the certificate the sender has in the register (its dev PKI folder) - telling a packet that
will not decrypt (``transport:decryption-failed``) from one whose signature does not verify
(``transport:invalid-signature``) and from one signed with another certificate than the sender's
(``transport:invalid-certificate``, HM's SecurityException "Expecting certificate ... but signed with ...").

Keys are read from a dev PKI folder (``pki/<her>/sign.key|sign.crt|enc.key|enc.crt``,
:mod:`gateway.security.devpki`), not through the gateway's key store.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import SecurityError, SignatureInvalid, SpoofingDetected
from gateway.registry import is_her_id
from gateway.security import cms, cms_decrypt, cms_verify
from gateway.security.certs import CertRef, load_certificate_file
from gateway.security.keys import KeyPair, load_private_key
from gateway.testing.hm_peer_formats import HmRefusal

__all__ = ["PeerCrypto"]


class PeerCrypto:
    """One party's key pairs and every other party's certificates, from a dev PKI folder."""

    def __init__(self, pki: Path, her_id: str) -> None:
        self.pki = Path(pki)
        self.her_id = her_id
        own = self.pki / her_id
        self.signer = KeyPair(load_certificate_file(own / "sign.crt"), load_private_key(own / "sign.key"))
        self.decryptor = KeyPair(load_certificate_file(own / "enc.crt"), load_private_key(own / "enc.key"))
        self._certs: dict[tuple[str, str], CertRef] = {}

    def _cert(self, her_id: str, name: str) -> CertRef | None:
        key = (her_id, name)
        if key not in self._certs:
            path = self.pki / her_id / name
            if not is_her_id(her_id) or not path.is_file():  # (a HER-id, so the path stays in the PKI folder)
                return None
            self._certs[key] = load_certificate_file(path)
        return self._certs[key]

    def protect(self, content: bytes, *, to_her: str) -> bytes:
        """Signed by us, encrypted to ``to_her``."""
        recipient = self._cert(to_her, "enc.crt")
        if recipient is None:
            raise LookupError(f"no encryption certificate for {to_her}")
        return cms.sign_then_encrypt(content, self.signer, recipient)

    def unprotect(self, packet: bytes, *, from_her: str) -> bytes:
        """The content ``from_her`` signed; raises :class:`HmRefusal` with HM's condition."""
        signing = self._cert(from_her, "sign.crt")
        if signing is None:  # ReportErrorOnRemoteCertificate: CertificateErrors.Missing
            raise HmRefusal("transport:missing-certificate", "Certificate is missing")
        try:
            inner, _ = cms_decrypt.decrypt(packet, [self.decryptor], receiver=self.her_id)
        except SecurityError:
            raise HmRefusal("transport:decryption-failed", "The message could not be decrypted.") from None
        try:
            return cms_verify.verify(inner, signers=[signing]).content
        except SpoofingDetected:
            raise HmRefusal(
                "transport:invalid-certificate",
                "Expecting the sender's signing certificate but signed with another",
                [signing.subject, signing.fingerprint.hex().upper()],
            ) from None
        except (SignatureInvalid, SecurityError):
            raise HmRefusal("transport:invalid-signature", "The signature could not be verified.") from None
