"""A development PKI for the configured region: a test CA, its CRL, and two certificates per party.

``serve`` makes it on first start, ``replay`` and the tests use it, and ``gateway pki init`` makes it by
hand. Layout under the data dir (the defaults of ``[security]`` and of the register's certificates)::

    pki/ca.crt  ca.key  ca.crl
    pki/<her-id>/sign.crt  sign.key  enc.crt  enc.key  [prev-enc.crt  prev-enc.key]

The certificates look like Norwegian enterprise certificates (virksomhetssertifikater) in the ways the
gateway checks: a signing certificate (digitalSignature + nonRepudiation) and an encryption certificate
(keyEncipherment + dataEncipherment) per party, the subject naming the organisation (O), the service
(OU) and carrying the HER-id in serialNumber so an operator can see whose certificate an error names.
RSA 2048 keeps generation quick. Nothing made here may be used in production.

The same building blocks mint the odd certificates tests need (expired, not yet valid, wrong key usage,
from an unknown CA) and revoke certificates by re-issuing the CRL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.config import Settings
from gateway.registry import Party, Register
from gateway.security.keys import DEV_FILES, load_private_key
from gateway.security.trust import Purpose

__all__ = [
    "DEV_HELSEID_KEY",
    "ENCRYPTION_USAGE",
    "SIGNING_USAGE",
    "DevCa",
    "ensure_dev_pki",
    "init_dev_pki",
    "party_subject",
    "reissue_crl",
    "revoke",
    "rollover_encryption",
    "write_certificate",
    "write_private_key",
]

#: Where the dev PKI puts the HelseID client's key for the edi2 adapter (``[adapters.edi2] key_file``), the
#: one the local NHN simulator (config/sim-nhn.toml) registers for the gateway's HelseID client.
DEV_HELSEID_KEY = "helseid/client.key"

CA_NAME = "SiO e-meldingsgateway dev CA - not for production"
CRL_VALIDITY = timedelta(days=7)
CA_VALIDITY = timedelta(days=3650)
PARTY_VALIDITY = timedelta(days=3 * 365)
_SKEW = timedelta(hours=1)  # not-before a little in the past, for clocks that lag
_RSA_BITS = 2048


def _usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ),
        False,
    )
    flags.update(on)
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


SIGNING_USAGE = _usage(digital_signature=True, content_commitment=True)
ENCRYPTION_USAGE = _usage(key_encipherment=True, data_encipherment=True)
_CA_USAGE = _usage(key_cert_sign=True, crl_sign=True)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)


def _fit(text: str) -> str:
    """X.520 caps most name attributes at 64 characters."""
    return text if len(text) <= 64 else text[:63] + "…"


def party_subject(party: Party, purpose: Purpose) -> x509.Name:
    """C=NO, O=<organisation>, OU=<service>, CN=<organisation> (signering|kryptering), serialNumber=<HER-id>."""
    word = "signering" if purpose == "sign" else "kryptering"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _fit(party.organisation.name)),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _fit(party.name)),
            x509.NameAttribute(NameOID.COMMON_NAME, _fit(f"{party.organisation.name} ({word})")),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, party.her_id),
        ]
    )


@dataclass(frozen=True)
class DevCa:
    """A test certificate authority: issues party certificates and CRLs."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @classmethod
    def create(
        cls, name: str = CA_NAME, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> DevCa:
        key = _new_key()
        start = not_before or datetime.now(UTC) - _SKEW
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SiO e-meldingsgateway (test)"),
                x509.NameAttribute(NameOID.COMMON_NAME, _fit(name)),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, pki_dir: Path) -> DevCa:
        cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
        return cls(cert, load_private_key(pki_dir / "ca.key"))

    def save(self, pki_dir: Path) -> None:
        write_certificate(pki_dir / "ca.crt", self.cert)
        write_private_key(pki_dir / "ca.key", self.key)

    def issue(
        self,
        subject: x509.Name,
        *,
        purpose: Purpose,
        key: rsa.RSAPrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: x509.KeyUsage | None = None,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """An end-entity certificate for ``purpose``; the overrides make the odd ones tests need."""
        key = key or _new_key()
        start = not_before or datetime.now(UTC) - _SKEW
        usage = key_usage or (SIGNING_USAGE if purpose == "sign" else ENCRYPTION_USAGE)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + PARTY_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key

    def crl(
        self,
        revoked: Iterable[x509.RevokedCertificate] = (),
        *,
        number: int = 1,
        this_update: datetime | None = None,
        next_update: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked``, current for a week unless told otherwise."""
        start = this_update or datetime.now(UTC) - timedelta(minutes=5)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(start)
            .next_update(next_update or start + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, hashes.SHA256())


# --- files -------------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write beside, then rename: a process reading the PKI never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """PEM PKCS#8, unencrypted, readable by the owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomically(path, data, 0o600)


def _write_crl(pki_dir: Path, crl: x509.CertificateRevocationList) -> None:
    _write_atomically(pki_dir / "ca.crl", crl.public_bytes(serialization.Encoding.PEM), 0o644)


def _read_crl(pki_dir: Path) -> x509.CertificateRevocationList | None:
    try:
        return x509.load_pem_x509_crl((pki_dir / "ca.crl").read_bytes())
    except (OSError, ValueError):
        return None


# --- the region's dev PKI ----------------------------------------------------------------------------


def _dev_parties(register: Register) -> list[Party]:
    """Parties that use the dev layout: those for which the register names no certificate file."""
    return [p for p in register if p.certificates == type(p.certificates)()]


def _party_complete(pki_dir: Path, her_id: str) -> bool:
    return all((pki_dir / her_id / DEV_FILES[f]).is_file() for f in ("sign_cert", "sign_key", "enc_cert", "enc_key"))


_PARTY_FILES: tuple[tuple[Purpose, str, str], ...] = (
    ("sign", "sign.crt", "sign.key"),
    ("encrypt", "enc.crt", "enc.key"),
)


def _issue_party(ca: DevCa, pki_dir: Path, party: Party) -> list[Path]:
    written = []
    for purpose, cert_name, key_name in _PARTY_FILES:
        cert, key = ca.issue(party_subject(party, purpose), purpose=purpose)
        write_private_key(pki_dir / party.her_id / key_name, key)
        write_certificate(pki_dir / party.her_id / cert_name, cert)
        written += [pki_dir / party.her_id / cert_name, pki_dir / party.her_id / key_name]
    return written


def _crl_fresh(pki_dir: Path, ca: x509.Certificate | None) -> bool:
    crl = _read_crl(pki_dir)
    if crl is None or crl.next_update_utc is None or ca is None or crl.issuer != ca.subject:
        return False
    return crl.next_update_utc > datetime.now(UTC) + timedelta(days=1)


def init_dev_pki(settings: Settings, register: Register, *, force: bool = False) -> list[Path]:
    """Make what is missing of the dev PKI (everything with ``force``); the files written.

    Existing files are kept, so it is cheap to call on every start. A CRL within a day of its
    nextUpdate is re-issued (with the same revocations), so a dev gateway left for a week still starts.
    """
    pki_dir = settings.in_data_dir("pki")
    written: list[Path] = []
    parties = _dev_parties(register)
    ca: DevCa | None = None
    if force or not (pki_dir / "ca.crt").is_file() or not (pki_dir / "ca.key").is_file():
        ca = DevCa.create()
        ca.save(pki_dir)
        written += [pki_dir / "ca.crt", pki_dir / "ca.key"]
        force = True  # a new CA makes every party certificate and the CRL stale
    for party in parties:
        if force or not _party_complete(pki_dir, party.her_id):
            ca = ca or DevCa.load(pki_dir)
            if force:
                for name in ("prev-enc.crt", "prev-enc.key"):
                    (pki_dir / party.her_id / name).unlink(missing_ok=True)
            written += _issue_party(ca, pki_dir, party)
    ca_cert = ca.cert if ca else _load_ca_cert(pki_dir)
    if force or not _crl_fresh(pki_dir, ca_cert):
        reissue_crl(pki_dir, ca=ca or DevCa.load(pki_dir), keep_revoked=not force)
        written.append(pki_dir / "ca.crl")
    helseid_key = settings.in_data_dir(DEV_HELSEID_KEY)
    if force or not helseid_key.is_file():  # the HelseID client's key the local NHN simulator knows
        write_private_key(helseid_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        written.append(helseid_key)
    return written


def _load_ca_cert(pki_dir: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    except (OSError, ValueError):
        return None


def ensure_dev_pki(settings: Settings, register: Register) -> None:
    """Make the dev PKI if it is not there (``serve`` on first start, ``replay``, tests); fast when it is."""
    init_dev_pki(settings, register)


def reissue_crl(
    pki_dir: Path,
    *,
    ca: DevCa | None = None,
    add: Iterable[x509.RevokedCertificate] = (),
    keep_revoked: bool = True,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
) -> x509.CertificateRevocationList:
    """Write a new ``pki/ca.crl``: the old list's revocations (if kept) plus ``add``, numbered on."""
    ca = ca or DevCa.load(pki_dir)
    old = _read_crl(pki_dir)
    usable = old is not None and old.issuer == ca.cert.subject and old.is_signature_valid(ca.key.public_key())
    entries = list(old) if usable and keep_revoked and old is not None else []
    number = 1
    if usable and old is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    crl = ca.crl([*entries, *add], number=number, this_update=this_update, next_update=next_update)
    _write_crl(pki_dir, crl)
    return crl


def revoke(
    pki_dir: Path,
    cert: x509.Certificate,
    *,
    at: datetime | None = None,
    reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
) -> x509.CertificateRevocationList:
    """Revoke ``cert`` (issued by the dev CA) by re-issuing the CRL with it listed."""
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(cert.serial_number)
        .revocation_date(at or datetime.now(UTC) - timedelta(minutes=1))
        .add_extension(x509.CRLReason(reason), critical=False)
        .build()
    )
    return reissue_crl(pki_dir, add=[entry])


def rollover_encryption(pki_dir: Path, party: Party, *, ca: DevCa | None = None) -> None:
    """Move a party's encryption pair to ``prev-enc.*`` and issue a new one (a certificate rollover)."""
    ca = ca or DevCa.load(pki_dir)
    folder = pki_dir / party.her_id
    shutil.copyfile(folder / "enc.crt", folder / "prev-enc.crt")
    shutil.copyfile(folder / "enc.key", folder / "prev-enc.key")
    os.chmod(folder / "prev-enc.key", 0o600)
    cert, key = ca.issue(party_subject(party, "encrypt"), purpose="encrypt")
    write_private_key(folder / "enc.key", key)
    write_certificate(folder / "enc.crt", cert)
