"""``gateway protect`` / ``gateway unprotect``: the CMS profile on stdin and stdout.

gateway protect --from HER --to HER [--config FILE] [--data-dir DIR]
    XML on stdin -> signed-then-encrypted DER on stdout
gateway unprotect --to HER [--from HER] [--config FILE] [--data-dir DIR]
    DER on stdin -> the verified XML, byte for byte as signed, on stdout; the verified signer (party,
    certificate subject and serial) on stderr, and a warning when the message names another sender than
    the party that signed it (the gateway refuses such a packet as abuse:spoofing-attack). Without --from
    the claimed sender is the party whose registered signing certificate signed the packet; a signer
    that is no party's is an error. Unlike the gateway's transport endpoint, which answers every failure
    before a verified signature alike, the tool says what failed: it runs for an operator, on a packet
    they hold.

On failure nothing goes to stdout; stderr gets the event code, the AppRec code and transport condition
where the error has them, and the reason. Exit 2 for a permanent failure, 75 (EX_TEMPFAIL) for a
temporary one (a CRL that cannot be had now).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import Settings, load_settings
from gateway.errors import GatewayError
from gateway.log import configure
from gateway.model.envelope import read_envelope
from gateway.model.kinds import load_catalog
from gateway.registry import Register, load_register
from gateway.security.protection import SignThenEncrypt, Verified, build_sign_then_encrypt
from gateway.xml import parse

EX_TEMPFAIL = 75


def register(sub: Any) -> None:
    protect = sub.add_parser("protect", help="sign then encrypt a message (stdin -> stdout)")
    protect.add_argument("--from", dest="sender", required=True, metavar="HER", help="the signing local party")
    protect.add_argument("--to", dest="receiver", required=True, metavar="HER", help="the receiving party")
    unprotect = sub.add_parser("unprotect", help="decrypt and verify a packet (stdin -> stdout)")
    unprotect.add_argument("--to", dest="receiver", required=True, metavar="HER", help="the receiving local party")
    unprotect.add_argument("--from", dest="sender", metavar="HER", help="the claimed sender (spoofing check)")
    for p in (protect, unprotect):
        p.add_argument("--config", type=Path, help="the config file")
        p.add_argument("--data-dir", type=Path, help="the data directory (its pki/ holds the certificates)")
    protect.set_defaults(run=run_protect)
    unprotect.set_defaults(run=run_unprotect)


def run_protect(args: argparse.Namespace) -> int:
    content = sys.stdin.buffer.read()
    try:
        _settings, _register, protection = _build(args, args.sender)
        packet = protection.protect(content, sender_her=args.sender, receiver_her=args.receiver)
    except GatewayError as exc:
        return _fail("protect", exc)
    sys.stdout.buffer.write(packet)
    sys.stdout.buffer.flush()
    return 0


def run_unprotect(args: argparse.Namespace) -> int:
    packet = sys.stdin.buffer.read()
    try:
        settings, register, protection = _build(args, args.receiver)
        if args.sender:
            verified = protection.open(packet, receiver_her=args.receiver, claimed_sender_her=args.sender)
        else:
            verified = protection.identify(packet, receiver_her=args.receiver)
    except GatewayError as exc:
        return _fail("unprotect", exc)
    if verified.untrusted is not None:  # the sender's own certificate fails trust: S02/S03, nothing shown
        return _fail("unprotect", verified.untrusted)
    sys.stdout.buffer.write(verified.content)
    sys.stdout.buffer.flush()
    print(
        f"verified: signer {verified.signer_her}, subject={verified.subject!r}, serial={verified.serial}, "
        f"issuer={verified.issuer!r}" + (" (decrypted with the previous key)" if verified.previous_key else ""),
        file=sys.stderr,
    )
    warning = _sender_warning(verified, settings, register)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _sender_warning(verified: Verified, settings: Settings, register: Register) -> str:
    """Why the verified signer is not the sender the message itself names ("" when it is)."""
    try:
        root = parse(verified.content, max_bytes=settings.schemas.max_message_bytes).root
        envelope = read_envelope(load_catalog(settings.schemas.catalog).identify(root), root)
    except GatewayError as exc:
        return f"the content is not a message the gateway reads ({exc.event}), so its sender was not compared."
    named = envelope.sender.her_ids if envelope.sender else ()
    sender = register.attribute(named)
    if sender is not None and sender.her_id == verified.signer_her:
        return ""
    return (
        f"the message names sender {', '.join(named) or '(none)'}, but it is signed by {verified.signer_her}; "
        "the gateway refuses such a packet (abuse:spoofing-attack)."
    )


def _build(args: argparse.Namespace, local_her: str) -> tuple[Settings, Register, SignThenEncrypt]:
    """Settings, register and protection; only ``local_her``'s private keys are parsed."""
    settings = load_settings(args.config, data_dir=args.data_dir)
    # stdout carries the packet or the message; log lines go to stderr
    configure(fmt=settings.log.format, level=settings.log.level, stream=sys.stderr)
    register = load_register(settings.gateway.region)
    protection = build_sign_then_encrypt(settings, register, private_keys_for={local_her})
    if protection.trust.crls.urls:
        asyncio.run(protection.refresh_crls(_fetch_url))
    return settings, register, protection


async def _fetch_url(url: str) -> bytes:
    """A CRL over HTTP(S); the security core has no HTTP client of its own, the tools use urllib."""
    return await asyncio.to_thread(_get, url)


def _get(url: str) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP(S) URL: {url}")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - scheme checked above
        data: bytes = response.read()
    return data


def _fail(command: str, exc: GatewayError) -> int:
    codes = [exc.event]
    if exc.apprec_code:
        codes.append(f"AppRec {exc.apprec_code}")
    if exc.transport_condition:
        codes.append(exc.transport_condition)
    if exc.retryable:
        codes.append("temporary: try again later")
    print(f"gateway {command}: {', '.join(codes)}: {exc.message}", file=sys.stderr)
    return EX_TEMPFAIL if exc.retryable else 2
