"""Reading an HTTP answer's body within a bound. ``StreamReader.read(n)`` returns what has arrived so far -
up to ``n`` bytes, often a first chunk only - so a body is read chunk by chunk to its end or the bound."""

from __future__ import annotations

import aiohttp

__all__ = ["read_body", "read_head"]


async def read_body(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None when it is over ``limit`` bytes (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_head(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body (an error body: its start says enough)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(65536):
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)
