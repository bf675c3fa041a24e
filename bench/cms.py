"""Benchmark of the CMS profile: median time per message for protect and unprotect.

    .venv/bin/python bench/cms.py [--iterations 200]

protect   = check both certificates (dates, usage, chain, CRL) + sign (RSA-2048, SHA-256) + encrypt (AES-256)
unprotect = decrypt + verify signature and digest + validate the signer certificate + the spoofing check

Messages of about 6 KB and 20 KB (synthetic XML with CRLF and ISO-8859-1 bytes). Keys are loaded once
beforehand, as the gateway does at start-up; a throw-away dev PKI is made in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.config import GatewaySettings, Settings
from gateway.registry import Organisation, Party, Register
from gateway.security import build_sign_then_encrypt, init_dev_pki

SENDER, RECEIVER = "7100101", "7200101"


def _message(size: int) -> bytes:
    head = b'<?xml version="1.0" encoding="ISO-8859-1"?>\r\n<MsgHead>\r\n'
    line = b"  <Note>Pasienten \xf8nsker \xe6rlig svar p\xe5 sp\xf8rsm\xe5l om medisinering.</Note>\r\n"
    tail = b"</MsgHead>\r\n"
    body = line * -(-(size - len(head) - len(tail)) // len(line))  # rounded up: at least ``size`` bytes
    return head + body + tail


def _median_ms(fn: Callable[[], object], iterations: int) -> float:
    for _ in range(10):  # warm-up: first calls pay for lazy imports and caches
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    register = Register(
        [
            Party(SENDER, "Pleie og omsorg", "plo", Organisation("7100100", "Frøya kommune"), local=True),
            Party(RECEIVER, "Medisinsk avdeling", "hospital", Organisation("7200000", "St. Olavs"), local=True),
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(Settings(), gateway=GatewaySettings(data_dir=Path(tmp)))
        init_dev_pki(settings, register)
        start = time.perf_counter()
        protection = build_sign_then_encrypt(settings, register)
        print(f"start-up: keys, certificates and CRL loaded once in {(time.perf_counter() - start) * 1000:.0f} ms")
        print(f"{'message':>8}  {'protect (sign+encrypt)':>24}  {'unprotect (decrypt+verify)':>28}")
        for size in (6 * 1024, 20 * 1024):
            content = _message(size)
            packet = protection.protect(content, sender_her=SENDER, receiver_her=RECEIVER)
            assert protection.unprotect(packet, receiver_her=RECEIVER, claimed_sender_her=SENDER).content == content
            protect_ms = _median_ms(
                lambda c=content: protection.protect(c, sender_her=SENDER, receiver_her=RECEIVER), args.iterations
            )
            unprotect_ms = _median_ms(
                lambda p=packet: protection.unprotect(p, receiver_her=RECEIVER, claimed_sender_her=SENDER),
                args.iterations,
            )
            print(f"{len(content) / 1024:>5.1f} KB  {protect_ms:>21.2f} ms  {unprotect_ms:>25.2f} ms")
    print(f"(median of {args.iterations} iterations each; Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
