"""The key store: every party's certificates, and the local parties' private keys, loaded once.

Parsing an RSA private key costs about 55 ms (cryptography checks the key's consistency), so keys are
read at start-up and kept; no message ever touches a key file. Where the register gives no path, the dev
PKI layout under the data dir is used (``pki/<her-id>/sign.crt`` ...). A path the register *does* give
must exist - a typo there is a configuration error at start-up, not a surprise at the first message.
A missing dev-layout file is only recorded; using it raises KeyUnavailable naming the path looked at.

A remote party the files give no certificate for can have its certificates *learned* while the gateway
runs: a transport that finds them in the party's CPP/CPA (the amqp transport, docs/cppa.md) hands them to
:meth:`KeyStore.learn` (kept by learned.py). A file always wins over a learned certificate (the region file
pins), and a learned one gets the same trust checks as any other, each time it is used.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import ConfigError, KeyUnavailable
from gateway.log import get_logger
from gateway.registry import Party, Register
from gateway.security.certs import CertRef, load_certificate_file
from gateway.security.learned import LearnedCertificates

__all__ = ["DEV_FILES", "CertificateInfo", "KeyPair", "KeyStore", "PartyKeys", "load_private_key"]

log = get_logger("gateway.security.keys")

#: certificates not learned that were said so (log lines), remembered to be said once; forgotten all at once
_SAID_KEPT = 10_000

#: File names of the dev PKI layout, ``pki/<her-id>/<name>``, by the register's certificate field.
DEV_FILES = {
    "sign_cert": "sign.crt",
    "sign_key": "sign.key",
    "enc_cert": "enc.crt",
    "enc_key": "enc.key",
    "previous_enc_cert": "prev-enc.crt",
    "previous_enc_key": "prev-enc.key",
}


@dataclass(frozen=True)
class CertificateInfo:
    """One configured certificate and when it expires (the scheduler warns 30/14/7 days ahead)."""

    her_id: str | None  # None for a trust anchor
    role: str  # sign | encrypt | previous-encrypt | trust-anchor
    subject: str
    serial: str
    issuer: str
    not_before: datetime
    not_after: datetime
    source: str

    @classmethod
    def of(cls, ref: CertRef, *, her_id: str | None, role: str) -> CertificateInfo:
        return cls(her_id, role, ref.subject, ref.serial, ref.issuer, ref.not_before, ref.not_after, ref.source)


@dataclass(frozen=True)
class KeyPair:
    """A local party's certificate with its private key."""

    ref: CertRef
    key: rsa.RSAPrivateKey
    previous: bool = False  # the encryption pair a certificate rollover replaced, kept to decrypt late packets


@dataclass(frozen=True)
class PartyKeys:
    """What the store holds for one party. ``missing`` lists the files looked for and not found."""

    her_id: str
    local: bool
    sign_cert: CertRef | None = None
    organisation: str = ""  # the HER-id of the party's organisation (parties of one may share a certificate)
    enc_cert: CertRef | None = None
    previous_enc_cert: CertRef | None = None
    signer: KeyPair | None = None
    decryptors: tuple[KeyPair, ...] = ()  # current key first, then the previous one (rollover)
    missing: tuple[str, ...] = ()
    keys_loaded: bool = False


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key from a PEM or DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read private key file {path}: {exc.strerror}.") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} does not hold a readable unencrypted private key: {exc}.") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}; the CMS profile needs an RSA key.")
    return key


class _PartyFiles:
    """Resolves a party's file paths: the register's, or the dev PKI layout."""

    def __init__(self, party: Party, pki_dir: Path) -> None:
        self.party = party
        self.pki_dir = pki_dir
        self.missing: list[str] = []

    def path(self, field: str) -> Path | None:
        given: Path | None = getattr(self.party.certificates, field)
        if given is not None:
            if not given.is_file():
                raise ConfigError(f"The register gives {field} = {given} for {self.party.her_id}; no such file.")
            return given
        default = self.pki_dir / self.party.her_id / DEV_FILES[field]
        if default.is_file():
            return default
        if not field.startswith("previous"):
            self.missing.append(f"{field} ({default})")
        return None

    def cert(self, field: str) -> CertRef | None:
        path = self.path(field)
        return load_certificate_file(path) if path is not None else None

    def pair(self, cert: CertRef | None, key_field: str, *, previous: bool = False) -> KeyPair | None:
        key_path = self.path(key_field)
        if cert is None or key_path is None:
            return None
        key = load_private_key(key_path)
        public = cert.cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or key.public_key().public_numbers() != public.public_numbers():
            raise ConfigError(f"The private key {key_path} does not belong to the certificate {cert.source}.")
        return KeyPair(cert, key, previous)


def _load_party(party: Party, pki_dir: Path, *, with_keys: bool) -> PartyKeys:
    files = _PartyFiles(party, pki_dir)
    if not (party.local and with_keys):
        return PartyKeys(
            party.her_id,
            party.local,
            organisation=party.organisation.her_id,
            sign_cert=files.cert("sign_cert"),
            enc_cert=files.cert("enc_cert"),
            missing=tuple(files.missing),
        )
    sign_cert, enc_cert = files.cert("sign_cert"), files.cert("enc_cert")
    signer = files.pair(sign_cert, "sign_key")
    current = files.pair(enc_cert, "enc_key")
    previous = files.pair(files.cert("previous_enc_cert"), "previous_enc_key", previous=True)
    return PartyKeys(
        party.her_id,
        party.local,
        organisation=party.organisation.her_id,
        sign_cert=sign_cert,
        enc_cert=enc_cert,
        previous_enc_cert=previous.ref if previous else None,
        signer=signer,
        decryptors=tuple(p for p in (current, previous) if p is not None),
        missing=tuple(files.missing),
        keys_loaded=True,
    )


class KeyStore:
    """Certificates of every party of the register; private keys of the local ones."""

    def __init__(self, parties: dict[str, PartyKeys]) -> None:
        self._parties = parties
        self._signers: dict[tuple[bytes, int, bytes], str] = {}
        for keys in parties.values():
            if keys.sign_cert is not None:
                self._signers[keys.sign_cert.identity()] = keys.her_id
        # certificates of remote parties learned from a transport's source (a CPP/CPA)
        self._learned = LearnedCertificates()
        self._said: set[tuple[str, str, bytes]] = set()  # (her, role, fingerprint) not learned, and said so

    @classmethod
    def load(cls, register: Register, pki_dir: Path, *, private_keys_for: Collection[str] | None = None) -> KeyStore:
        """Read every party's files. ``private_keys_for`` limits which local parties' keys are parsed
        (command-line tools that act for one party); the gateway loads them all."""
        parties: dict[str, PartyKeys] = {}
        for party in register:
            with_keys = private_keys_for is None or party.her_id in private_keys_for
            keys = _load_party(party, pki_dir, with_keys=with_keys)
            if keys.missing and party.local:
                log.warning(
                    "security.key_files_missing",
                    code="security.key_files_missing",
                    her_id=party.her_id,
                    missing=list(keys.missing),
                )
            parties[party.her_id] = keys
        return cls(parties)

    def __iter__(self) -> Iterator[PartyKeys]:
        return iter(self._parties.values())

    def _party(self, her_id: str) -> PartyKeys:
        keys = self._parties.get(her_id)
        if keys is None:
            raise KeyUnavailable(f"Party {her_id} is not in the register, so it has no certificates here.")
        return keys

    def learn(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None:
        """Take ``her_id``'s certificates from a transport's source (its CPP/CPA) where the files give none
        (learned.py keeps them).

        A party outside the register, or a local party (whose certificates are ours), learns nothing; a role
        a file pins learns nothing either (a certificate offered over it is said once); a signing
        certificate that is a party's of another organisation, or whose key cannot be read, is refused."""
        keys = self._parties.get(her_id)
        if keys is None or keys.local:
            return
        if signing is not None and (keys.sign_cert is not None or not self._may_sign_for(keys, signing)):
            self._pinned_over(keys, "sign", keys.sign_cert, signing)
            signing = None
        if encryption is not None and keys.enc_cert is not None:
            self._pinned_over(keys, "encrypt", keys.enc_cert, encryption)
            encryption = None
        self._learned.offer(her_id, signing=signing, encryption=encryption)

    def _may_sign_for(self, keys: PartyKeys, ref: CertRef) -> bool:
        """Whether ``ref`` may be learned as ``keys``' signing certificate: its key readable, and no party of
        another organisation's (one enterprise certificate often serves several HER-ids of one organisation)."""
        try:
            identity = ref.identity()
        except Exception:  # a key type cryptography cannot load: unusable, never a stuck channel
            self._say_once(keys.her_id, "sign", ref, "security.certificate_unusable", "its public key cannot be read")
            return False
        owner = self._signers.get(identity) or self._learned.owner(identity)
        if owner is None or owner == keys.her_id or self._parties[owner].organisation == keys.organisation:
            return True
        self._say_once(keys.her_id, "sign", ref, "security.certificate_conflict", f"it is party {owner}'s")
        return False

    def _pinned_over(self, keys: PartyKeys, role: str, pinned: CertRef | None, offered: CertRef) -> None:
        if pinned is not None and pinned.fingerprint != offered.fingerprint:
            self._say_once(keys.her_id, role, offered, "security.certificate_pinned", f"{pinned.describe()} is pinned")

    def _say_once(self, her_id: str, role: str, ref: CertRef, code: str, why: str) -> None:
        """A certificate not learned, said once per party, role and certificate (a source offers it again
        at every lookup)."""
        key = (her_id, role, ref.fingerprint)
        if key in self._said:
            return
        if len(self._said) >= _SAID_KEPT:
            self._said.clear()
        self._said.add(key)
        level = log.warning if code == "security.certificate_pinned" else log.error
        level(code, code=code, her_id=her_id, role=role, certificate=ref.describe(), reason=why)

    def signer(self, her_id: str) -> KeyPair:
        """The signing certificate and key of a local party."""
        keys = self._party(her_id)
        if keys.signer is None:
            raise KeyUnavailable(_missing(keys, f"signing key for {her_id}"))
        return keys.signer

    def decryptors(self, her_id: str) -> tuple[KeyPair, ...]:
        """The decryption keys of a local party: current first, then the previous one (rollover).

        For a HER-id that is no local party - a packet for a service of ours the register does not list
        (E21), or not for us at all - every local key is offered: the packet opens only if it was
        encrypted to one of our certificates, and the pipeline then tells E21 from misaddressed."""
        keys = self._parties.get(her_id)
        if keys is None or not keys.local:
            return tuple(pair for party in self._parties.values() if party.local for pair in party.decryptors)
        if not keys.decryptors:
            raise KeyUnavailable(_missing(keys, f"decryption key for {her_id}"))
        return keys.decryptors

    def encryption_cert(self, her_id: str) -> CertRef:
        """The certificate messages to ``her_id`` are encrypted to: the file's, or the newest learned."""
        keys = self._party(her_id)
        certificate = keys.enc_cert or next(iter(self._learned.of(her_id).encryption), None)
        if certificate is None:
            raise KeyUnavailable(_missing(keys, f"encryption certificate for {her_id}"))
        return certificate

    def signing_cert(self, her_id: str) -> CertRef | None:
        """The registered signing certificate of ``her_id``: the file's, or the newest learned (None: none)."""
        keys = self._parties.get(her_id)
        if keys is None:
            return None
        return keys.sign_cert or next(iter(self._learned.of(her_id).signing), None)

    def knows(self, her_id: str) -> bool:
        """Whether ``her_id`` is a remote party of the register (whose certificates a source may give)."""
        keys = self._parties.get(her_id)
        return keys is not None and not keys.local

    def verifiers(self, her_id: str) -> list[CertRef]:
        """The certificates a signature by ``her_id`` is verified with: the file's, or the learned ones (the
        newest and the one it replaced). Empty for a party outside the register, or a local one without;
        :class:`KeyUnavailable` for a remote party none is known for yet - its packets wait, nothing is
        wrong with them (its CPP/CPA could not be had, say)."""
        keys = self._parties.get(her_id)
        if keys is None:
            return []
        if keys.sign_cert is not None:
            return [keys.sign_cert]
        learned = list(self._learned.of(her_id).signing)
        if not learned and not keys.local:
            raise KeyUnavailable(_missing(keys, f"signing certificate for {her_id}"))
        return learned

    def signing_certs(self) -> list[CertRef]:
        """Every party's registered (or learned) signing certificates."""
        pinned = [keys.sign_cert for keys in self._parties.values() if keys.sign_cert is not None]
        return pinned + [ref for her in self._learned.parties() for ref in self._learned.of(her).signing]

    def owner_of_signing_cert(self, ref: CertRef) -> str | None:
        """The party whose registered (or learned) signing certificate ``ref`` is (by issuer, serial and key)."""
        identity = ref.identity()
        return self._signers.get(identity) or self._learned.owner(identity)

    def certificates(self) -> list[CertificateInfo]:
        """Every party certificate held, with its expiry."""
        out: list[CertificateInfo] = []
        for keys in self._parties.values():
            learned = self._learned.of(keys.her_id)
            for role, refs in (
                ("sign", (keys.sign_cert,) if keys.sign_cert else learned.signing),
                ("encrypt", (keys.enc_cert,) if keys.enc_cert else learned.encryption),
                ("previous-encrypt", (keys.previous_enc_cert,)),
            ):
                out.extend(CertificateInfo.of(ref, her_id=keys.her_id, role=role) for ref in refs if ref is not None)
        return out


def _missing(keys: PartyKeys, what: str) -> str:
    """Why a key or certificate is not at hand, naming the files looked for (run `gateway pki init`?)."""
    if not keys.local and "key" in what:
        return f"No {what}: it is a remote party, and this gateway holds private keys of local parties only."
    if keys.missing:
        learned = "" if keys.local else ", and no CPP/CPA has given one"
        return f"No {what}: looked for {', '.join(keys.missing)}{learned}."
    if not keys.keys_loaded:
        return f"No {what}: its private keys were not loaded in this process."
    return f"No {what} is configured."
