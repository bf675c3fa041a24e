"""The key store: every party's certificates, and the local parties' private keys, loaded once.

Parsing an RSA private key costs about 55 ms (cryptography checks the key's consistency), so keys are
read at start-up and kept; no message ever touches a key file. Where the register gives no path, the dev
PKI layout under the data dir is used (``pki/<her-id>/sign.crt`` ...). A path the register *does* give
must exist - a typo there is a configuration error at start-up, not a surprise at the first message.
A missing dev-layout file is only recorded; using it raises KeyUnavailable naming the path looked at.

A remote party the files give no certificate for can have its certificates *learned* while the gateway
runs: a transport that finds them in the party's CPP/CPA (the amqp transport, docs/cppa.md) hands them to
:meth:`KeyStore.learn`. A file always wins over a learned certificate (the region file pins), and a learned
one gets the same trust checks as any other, each time it is used.
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

__all__ = ["DEV_FILES", "CertificateInfo", "KeyPair", "KeyStore", "PartyKeys", "load_private_key"]

log = get_logger("gateway.security.keys")

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
        # certificates of remote parties learned from a transport's source (a CPP/CPA), by HER-id; each entry
        # is replaced whole, so a reader in another thread sees the old pair or the new one
        self._learned: dict[str, _Learned] = {}
        self._overruled: set[tuple[str, str, bytes]] = set()  # (her, role, fingerprint) said once

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
        """Take ``her_id``'s certificates from a transport's source (its CPP/CPA) where the files give none.

        A party outside the register, or a local party (whose certificates are ours), learns nothing; a
        certificate not given keeps what was learned before, and a signing certificate that is another party's
        is refused. Each change is logged with where it came from, and a certificate the files pin over once
        per certificate."""
        keys = self._parties.get(her_id)
        if keys is None or keys.local:
            return
        owner = self._signers.get(signing.identity()) if signing is not None else None
        if signing is not None and owner not in (None, her_id):  # another party's: never two owners of one
            log.error(
                "security.certificate_conflict",
                code="security.certificate_conflict",
                her_id=her_id,
                owner=owner,
                certificate=signing.describe(),
            )
            signing = None
        before = self._learned.get(her_id, _Learned(None, None))
        after = _Learned(
            self._take(her_id, "sign", keys.sign_cert, signing, before.signing),
            self._take(her_id, "encrypt", keys.enc_cert, encryption, before.encryption),
        )
        if after == before:
            return
        if after.signing is not None:
            self._signers[after.signing.identity()] = her_id
        self._learned[her_id] = after
        if before.signing is not None and before.signing != after.signing:
            self._signers.pop(before.signing.identity(), None)

    def _take(
        self, her_id: str, role: str, pinned: CertRef | None, offered: CertRef | None, learned: CertRef | None
    ) -> CertRef | None:
        """The certificate to keep learned for one role: the one offered, unless a file pins the role."""
        if offered is None or _same(offered, learned):
            return learned
        if pinned is not None:
            if not _same(offered, pinned) and (her_id, role, offered.fingerprint) not in self._overruled:
                self._overruled.add((her_id, role, offered.fingerprint))
                log.warning(
                    "security.certificate_pinned",
                    code="security.certificate_pinned",
                    her_id=her_id,
                    role=role,
                    pinned=pinned.describe(),
                    offered=offered.describe(),
                )
            return None
        log.info("security.certificate_learned", her_id=her_id, role=role, certificate=offered.describe())
        return offered

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
        """The certificate messages to ``her_id`` are encrypted to."""
        keys = self._party(her_id)
        learned = self._learned.get(her_id)
        certificate = keys.enc_cert or (learned.encryption if learned else None)
        if certificate is None:
            raise KeyUnavailable(_missing(keys, f"encryption certificate for {her_id}"))
        return certificate

    def signing_cert(self, her_id: str) -> CertRef | None:
        """The registered (or learned) signing certificate of ``her_id`` (None when there is none)."""
        keys = self._parties.get(her_id)
        if keys is None:
            return None
        learned = self._learned.get(her_id)
        return keys.sign_cert or (learned.signing if learned else None)

    def signing_certs(self) -> list[CertRef]:
        """Every party's registered (or learned) signing certificate."""
        return [ref for ref in map(self.signing_cert, self._parties) if ref is not None]

    def owner_of_signing_cert(self, ref: CertRef) -> str | None:
        """The party whose registered signing certificate ``ref`` is (by issuer, serial and key)."""
        return self._signers.get(ref.identity())

    def certificates(self) -> list[CertificateInfo]:
        """Every party certificate held, with its expiry."""
        out = []
        for keys in self._parties.values():
            learned = self._learned.get(keys.her_id, _Learned(None, None))
            for role, ref in (
                ("sign", keys.sign_cert or learned.signing),
                ("encrypt", keys.enc_cert or learned.encryption),
                ("previous-encrypt", keys.previous_enc_cert),
            ):
                if ref is not None:
                    out.append(CertificateInfo.of(ref, her_id=keys.her_id, role=role))
        return out


@dataclass(frozen=True)
class _Learned:
    """A remote party's certificates as a transport's source gave them (None: not given, or pinned)."""

    signing: CertRef | None
    encryption: CertRef | None


def _same(a: CertRef | None, b: CertRef | None) -> bool:
    return a is not None and b is not None and a.fingerprint == b.fingerprint


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
