"""The CRL cache: revocation lists read from files or fetched from URLs, consulted without I/O.

Certificate validation runs on the message path, synchronously, so it must never wait for a network.
It only reads this cache. Filling the cache is separate: :meth:`CrlCache.load_files` at start-up (files
only) and :meth:`CrlCache.refresh` from the scheduler, which re-reads files and fetches URLs through a
fetcher it is given - this package does no network I/O of its own and imports no HTTP client.

When a certificate's issuer has no CRL in the cache, or its CRL is past ``nextUpdate`` and no fresher one
could be had, the answer is :class:`~gateway.errors.RevocationUnavailable`: temporary, the message is
retried later rather than rejected (Helsenorge's "RevokedOffline"). A failed refresh keeps the previous
CRL, which stays usable until its own ``nextUpdate``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from gateway.errors import CertificateRevoked, RevocationUnavailable
from gateway.log import get_logger
from gateway.security.certs import CertRef, describe, name_text

__all__ = ["CrlCache", "CrlStatus", "Fetcher"]

#: Bytes of a URL; the caller's HTTP client, injected so this package stays free of one.
Fetcher = Callable[[str], Awaitable[bytes]]

log = get_logger("gateway.security.crl")


@dataclass(frozen=True)
class CrlStatus:
    """What the cache holds for one configured source (for health checks and the admin view)."""

    source: str
    issuer: str | None
    this_update: datetime | None
    next_update: datetime | None
    revoked: int
    error: str | None


@dataclass(frozen=True)
class _Entry:
    source: str
    crl: x509.CertificateRevocationList | None
    digest: bytes = b""
    error: str | None = None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _parse(data: bytes) -> tuple[x509.CertificateRevocationList, bytes]:
    crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    return crl, hashlib.sha256(data).digest()


class CrlCache:
    """Revocation lists by source. An empty source list switches revocation checking off."""

    def __init__(self, sources: Sequence[str], *, base: Path, timeout_s: float = 10.0) -> None:
        self._sources = tuple(sources)
        self._base = base
        self._timeout_s = timeout_s
        self._entries: dict[str, _Entry] = {s: _Entry(s, None, error="not loaded yet") for s in sources}
        # (crl digest, issuer fingerprint) -> signature valid; a CRL's signature is checked once per issuer
        self._signature_ok: dict[tuple[bytes, bytes], bool] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._sources)

    @property
    def urls(self) -> list[str]:
        return [s for s in self._sources if _is_url(s)]

    def _path(self, source: str) -> Path:
        p = Path(source)
        return p if p.is_absolute() else self._base / p

    def load_files(self) -> None:
        """(Re-)read every file source now; used at start-up, before the first message."""
        for source in self._sources:
            if not _is_url(source):
                self._store(source, self._read_file(source))

    async def refresh(self, fetch: Fetcher) -> None:
        """Re-read the files and fetch the URLs (each within ``crl_timeout_s``); for the scheduler."""
        for source in self._sources:
            if _is_url(source):
                self._store(source, await self._fetch(source, fetch))
            else:
                self._store(source, await asyncio.to_thread(self._read_file, source))

    def _read_file(self, source: str) -> _Entry:
        path = self._path(source)
        try:
            crl, digest = _parse(path.read_bytes())
        except OSError as exc:
            return _Entry(source, None, error=f"cannot read {path}: {exc.strerror}")
        except ValueError as exc:
            return _Entry(source, None, error=f"{path} is not a readable CRL: {exc}")
        return _Entry(source, crl, digest)

    async def _fetch(self, url: str, fetch: Fetcher) -> _Entry:
        try:
            data = await asyncio.wait_for(fetch(url), self._timeout_s)
            crl, digest = _parse(data)
        except TimeoutError:
            return _Entry(url, None, error=f"fetching {url} took longer than {self._timeout_s:g} s")
        except ValueError as exc:
            return _Entry(url, None, error=f"{url} did not return a readable CRL: {exc}")
        except Exception as exc:  # the fetcher is the caller's: any failure of it means "not had now"
            return _Entry(url, None, error=f"fetching {url} failed: {type(exc).__name__}: {exc}")
        return _Entry(url, crl, digest)

    def _store(self, source: str, entry: _Entry) -> None:
        previous = self._entries.get(source)
        if entry.crl is None:
            log.warning("security.crl_unavailable", code="security.crl_unavailable", source=source, reason=entry.error)
            if previous is not None and previous.crl is not None:
                # keep the last good list; it is still usable until its own nextUpdate
                entry = _Entry(source, previous.crl, previous.digest, entry.error)
        self._entries = {**self._entries, source: entry}
        # forget signature results of lists no longer held, so refreshes do not grow the memo
        current = {e.digest for e in self._entries.values()}
        self._signature_ok = {k: v for k, v in self._signature_ok.items() if k[0] in current}

    def status(self) -> list[CrlStatus]:
        """One line per configured source: what is cached and the last error, if any."""
        out = []
        for entry in self._entries.values():
            crl = entry.crl
            out.append(
                CrlStatus(
                    source=entry.source,
                    issuer=name_text(crl.issuer) if crl is not None else None,
                    this_update=crl.last_update_utc if crl is not None else None,
                    next_update=crl.next_update_utc if crl is not None else None,
                    revoked=len(crl) if crl is not None else 0,
                    error=entry.error,
                )
            )
        return out

    def check(self, ref: CertRef, issuer: CertRef, *, at: datetime) -> None:
        """Raise if ``ref`` is revoked, or if its revocation status cannot be known from the cache."""
        if not self.enabled:
            return
        crl, source = self._current(issuer, at=at, subject=ref)
        revoked = crl.get_revoked_certificate_by_serial_number(ref.cert.serial_number)
        if revoked is None:
            return
        said = f"is revoked since {revoked.revocation_date_utc:%Y-%m-%d %H:%M} UTC{_reason(revoked)}"
        raise CertificateRevoked(
            f"The {describe(ref)} {said}, according to the CRL from {source}.",
            public=f"The {describe(ref, source=False)} {said}, according to its issuer's CRL.",
        )

    def _current(
        self, issuer: CertRef, *, at: datetime, subject: CertRef
    ) -> tuple[x509.CertificateRevocationList, str]:
        """The freshest CRL signed by ``issuer`` that is still current at ``at``."""
        signed = [
            (e.crl, e)
            for e in self._entries.values()
            if e.crl is not None and e.crl.issuer == issuer.cert.subject and self._signed_by(e.crl, e, issuer)
        ]
        if not signed:
            errors = "; ".join(e.error for e in self._entries.values() if e.error)
            raise RevocationUnavailable(
                f"No CRL signed by the issuer {issuer.subject!r} is available to check the {describe(subject)}"
                + (f" ({errors})." if errors else ".")
            )
        crl, best = max(signed, key=lambda pair: pair[0].last_update_utc)
        next_update = crl.next_update_utc
        if next_update is not None and next_update < at:
            raise RevocationUnavailable(
                f"The CRL from {best.source} (issuer {issuer.subject!r}) expired at {next_update:%Y-%m-%d %H:%M} "
                f"UTC and no fresher one could be had{f' ({best.error})' if best.error else ''}; "
                f"cannot check the {describe(subject)}."
            )
        return crl, best.source

    def _signed_by(self, crl: x509.CertificateRevocationList, entry: _Entry, issuer: CertRef) -> bool:
        key = (entry.digest, issuer.fingerprint)
        ok = self._signature_ok.get(key)
        if ok is None:
            try:
                ok = crl.is_signature_valid(issuer.cert.public_key())  # type: ignore[arg-type]
            except TypeError:  # a key type that cannot sign CRLs
                ok = False
            self._signature_ok[key] = ok
        return ok


def _reason(revoked: x509.RevokedCertificate) -> str:
    try:
        reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return ""
    return f" (reason: {reason.name})"
