"""Handing received messages to the local EHR: into its inbox folder, or by POST to its callback URL.

(The default, the inbox the EHR pulls from over the API, needs no handing over: the message waits in the
store until the EHR acknowledges it.) Both hand-overs are at-least-once: a folder write is atomic and a
callback is retried until the EHR answers 2xx, so the EHR must treat the gateway message id
(``X-Gateway-Message-Id``) as its duplicate key.

The EHR's folder is shared with the EHR, so it is written as a drop folder is (adapters/folder_fs.py): a
folder that is a symbolic link is not entered, and a file already there under the message's name is
never overwritten - the same bytes count as delivered (a retried hand-over), anything else is a
transport error the operator sees and the queue retries.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp

from adapters.folder_fs import atomic_write
from gateway.errors import NoRoute, TransportError
from gateway.registry import Register
from gateway.store.base import Claim

__all__ = ["EhrDelivery"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class EhrDelivery:
    def __init__(self, register: Register, *, timeout_s: float = 30.0) -> None:
        self.register = register
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, claim: Claim) -> None:
        party = self.register.get(claim.delivery.receiver_her)
        if party is None:
            raise NoRoute(f"{claim.delivery.receiver_her} is no longer in the register.")
        if claim.delivery.channel == "ehr:folder" and party.folder is not None:
            name = _SAFE.sub("_", f"{claim.message.kind or 'message'}-{claim.message.id}.xml")
            try:
                await asyncio.to_thread(atomic_write, party.folder, name, claim.payload)
            except FileExistsError as exc:
                raise TransportError(f"Cannot write {name} to the EHR folder {party.folder}: {exc.strerror}.") from exc
            except OSError as exc:
                raise TransportError(f"Cannot write to the EHR folder {party.folder}: {exc.strerror or exc}.") from exc
            return
        if claim.delivery.channel == "ehr:callback" and party.callback_url:
            await self._post(party.callback_url, claim)
            return
        raise NoRoute(f"{party.display} has no {claim.delivery.channel.removeprefix('ehr:')} configured.")

    async def _post(self, url: str, claim: Claim) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        m = claim.message
        headers = {
            "Content-Type": "application/xml",
            "X-Gateway-Message-Id": m.id,
            "X-Msg-Id": m.msg_id or "",
            "X-Kind": m.kind or "",
            "X-From-Her-Id": m.sender_her or "",
            "X-To-Her-Id": claim.delivery.receiver_her,
        }
        try:
            async with self._session.post(url, data=claim.payload, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                raise TransportError(f"The EHR callback {url} answered {response.status}.")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"The EHR callback {url} failed: {type(exc).__name__}.") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
