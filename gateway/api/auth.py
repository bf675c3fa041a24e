"""API clients and their bearer tokens.

Tokens come from ``[[api.tokens]]`` (plain, or as the SHA-256 hex of the token so the config holds no
secret), each bound to the local HER-ids it may send for and see. With no token configured, the first
start makes one dev token - every local party, admin rights - writes it to ``<data_dir>/dev-token`` and
prints it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from gateway.config import Settings
from gateway.errors import Forbidden, Unauthorized
from gateway.pipeline.outbound import Client
from gateway.store.base import MessageRecord

__all__ = ["Authenticator", "dev_token", "may_see", "require_party"]

#: What a bearer token may be: visible ASCII (RFC 6750's b64token and more), of a sane length.
_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")


class Authenticator:
    def __init__(self, entries: Iterable[tuple[str, Client]]) -> None:
        # sha256(token) -> client; comparing digests in constant time leaks nothing about the token
        self._by_digest = list(entries)

    @classmethod
    def from_settings(cls, settings: Settings, *, dev: str | None = None) -> Authenticator:
        entries = []
        for token in settings.api.tokens:
            digest = token.token_sha256.lower() or hashlib.sha256(token.token.encode()).hexdigest()
            senders = None if "*" in token.senders else frozenset(token.senders)
            entries.append((digest, Client(token.name, senders, token.admin)))
        if dev is not None:
            entries.append((hashlib.sha256(dev.encode()).hexdigest(), Client("dev-token", None, True)))
        return cls(entries)

    def client(self, authorization: str | None) -> Client:
        """The client whose token ``authorization`` carries. A refusal never repeats what was sent."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("Send the API token as 'Authorization: Bearer <token>'.")
        token = authorization.removeprefix("Bearer ").strip()
        if not _TOKEN.fullmatch(token):  # not a token anyone was given: no hashing of odd bytes
            raise Unauthorized("The API token is not known to this gateway.")
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        for known, client in self._by_digest:
            if hmac.compare_digest(known, digest):
                return client
        raise Unauthorized("The API token is not known to this gateway.")


def may_see(client: Client, record: MessageRecord) -> bool:
    """Admins see everything; a client sees what the parties it acts for sent, and what they received."""
    if client.admin or client.senders is None:
        return True
    own = record.sender_her if record.direction == "out" else record.receiver_her
    return own in client.senders


def require_party(client: Client, her_id: str) -> None:
    if not (client.admin or client.may_send_for(her_id)):
        raise Forbidden(f"Client {client.name} does not act for HER-id {her_id}.")


def dev_token(data_dir: Path) -> tuple[str, bool]:
    """The dev token (made on first call): (token, whether it was just made)."""
    path = data_dir / "dev-token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True
