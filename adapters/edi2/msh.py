"""A client of NHN's Meldingstjener REST API ("EDI 2.0"), API version 3 and the v2 profile.

Every call carries the required headers (``api-version``, ``nhn-source-system``) and HelseID's DPoP-bound
access token with a fresh proof (adapters/helseid/client.py). A 401 that asks for a DPoP nonce is answered
with one, any other 401 with one token refresh; then the call is tried once more. NHN's answers become the
gateway's own errors (docs/edi2.md has the table):

* 400 (validation) - :class:`~gateway.errors.PermanentDeliveryError` carrying NHN's validation errors;
* 403 "Not authorized for HerId(s)" - :class:`~gateway.errors.NotAuthorized` (retried; logged as a
  configuration error an operator must fix in HelseID or the Adresseregister);
* 423 Locked (another HelseID client holds the HER-id) - :class:`~gateway.errors.ChannelLocked`;
* 401 once more after the refresh - :class:`~gateway.errors.AuthenticationRefused` (retried);
* 429 and 5xx, and the network - :class:`~gateway.errors.TransportError` with NHN's ``Retry-After``.

NHN's answers are read within bounds (:data:`MAX_ANSWER_BYTES`, one SSE event at most
:data:`MAX_EVENT_BYTES`), and NHN's message ids must look like ids before they go into a path. The SSE
stream is given up when nothing, not even a heartbeat, came for ``stream_idle_s``: a connection a firewall
dropped silently is noticed, and the loop polls and opens it again.

Both error formats are read: v3's problem details and v2's ``ErrorMessage``. Unknown JSON fields are
ignored everywhere (NHN adds fields).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from adapters.bodies import read_body, read_head
from adapters.edi2 import msh_answers as answers
from adapters.edi2.msh_answers import Notification, SentStatus
from adapters.helseid.client import HelseIdClient
from gateway.errors import (
    AuthenticationRefused,
    ChannelLocked,
    NotAuthorized,
    PermanentDeliveryError,
    TransportError,
)
from gateway.log import get_logger
from gateway.transport import retry_after, retryable_status

__all__ = ["MAX_ANSWER_BYTES", "MAX_EVENT_BYTES", "MAX_REQUEST_BYTES", "MshClient", "Notification", "SentStatus"]

log = get_logger(__name__)

#: NHN's limit on one request (the business document travels base64 inside JSON).
MAX_REQUEST_BYTES = 35 * 1024 * 1024
#: the most of one answer that is read: a business document at NHN's limit, base64 in JSON, with room
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: the most of one SSE event (a notification is a few hundred bytes)
MAX_EVENT_BYTES = 1024 * 1024

ApiVersion = Literal["2", "3"]
# a call's answer may be a business document at NHN's limit: bounded by silence more than by its length
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=600.0, sock_connect=30.0, sock_read=60.0)


class MshClient:
    def __init__(
        self,
        base_url: str,
        helseid: HelseIdClient,
        *,
        session: aiohttp.ClientSession,
        api_version: ApiVersion = "3",
        source_system: str = "sio-gateway",
        application: tuple[str, str] = ("sio-gateway", "0"),
        stream_idle_s: float = 120.0,
    ) -> None:
        self.stream_idle_s = stream_idle_s
        self.base_url = base_url.rstrip("/")
        self.helseid = helseid
        self.session = session
        self.api_version = api_version
        self.source_system = source_system
        self.application = application

    # -- v3 -------------------------------------------------------------------------------------------

    async def configure(self, her_ids: Sequence[str], *, client_locked: bool) -> None:
        """``PUT /mshconfigurations``: every local HER-id served through NHN, declared at start."""
        configurations = [
            {"herId": int(h), "receiveNotificationChannel": "Api", "clientLocked": client_locked} for h in her_ids
        ]
        await self._call("PUT", "/mshconfigurations", json_body={"configurations": configurations})

    async def send(self, *, sender_her: str, receiver_hers: Sequence[str], msg_type: str, xml: bytes) -> str:
        """``POST /messages`` (v3) or ``POST /Messages`` (v2): the business document, plain UTF-8 XML in
        base64; returns NHN's message id."""
        document = base64.b64encode(xml).decode("ascii")
        if self.api_version == "3":
            body: dict[str, Any] = {
                "businessDocument": document,
                "contentType": "application/xml",
                "contentTransferEncoding": "base64",
                "senderHerId": int(sender_her),
                "receiverHerIds": [int(h) for h in receiver_hers],
                "messageTypeIdentificator": msg_type,
                "applicationName": self.application[0],
                "applicationVersion": self.application[1],
            }
            answer = await self._call("POST", "/messages", json_body=body)
            return answers.nhn_id(answer.get("id") if isinstance(answer, dict) else None, "POST /messages")
        body = {
            "businessDocument": document,
            "contentType": "application/xml",
            "contentTransferEncoding": "base64",
            "receiverHerIdsSubset": [int(h) for h in receiver_hers],
            "ebXmlOverrides": {"applicationName": self.application[0], "applicationVersion": self.application[1]},
        }
        answer = await self._call("POST", "/Messages", json_body=body)
        return answers.nhn_id(answer, "POST /Messages")  # a JSON string (KS strips its quotes too)

    async def notifications(self, her_ids: Sequence[str], *, offset: int, count: int = 100) -> list[Notification]:
        params = [("HerIds", h) for h in her_ids] + [("Offset", str(offset)), ("NotificationsToFetch", str(count))]
        answer = await self._call("GET", "/notifications", params=params)
        listed = answer.get("notifications") if isinstance(answer, dict) else None
        return [n for n in map(answers.notification, listed if isinstance(listed, list) else []) if n is not None]

    async def stream(self, her_ids: Sequence[str], *, offset: int | None) -> AsyncIterator[Notification]:
        """``GET /notifications/stream`` (SSE): the notifications as they come, from ``offset`` (or the
        tail); ends when NHN ends the stream or the connection drops."""
        params = [("HerIds", h) for h in her_ids] + ([("Offset", str(offset))] if offset is not None else [])
        url = f"{self.base_url}/notifications/stream"
        opened = await self._open("GET", url, params=params, accept="text/event-stream", streaming=True)
        async with opened as response:
            await self._raise_for(response)
            if response.status == 204:
                return
            try:
                async for notification in _events(response.content):
                    yield notification
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:  # dropped, silent, a line too long
                raise TransportError(f"NHN's notification stream ended: {type(exc).__name__}.") from exc

    async def downloaded(self, message_id: str, receiver_her: str) -> None:
        """Mark a received message as taken: v3 ``PUT downloaded``, v2 ``PUT read/{herId}``."""
        if self.api_version == "3":
            body = {"receiverHerId": int(receiver_her)}
            await self._call("PUT", f"/messages/{answers.path_id(message_id)}/downloaded", json_body=body)
        else:
            await self._call("PUT", f"/Messages/{answers.path_id(message_id)}/read/{int(receiver_her)}")

    # -- both versions ----------------------------------------------------------------------------------

    async def unread(self, receiver_hers: Sequence[str], *, count: int = 100) -> list[tuple[str, str]]:
        """v2: the unread messages for our HER-ids as (message id, receiver HER-id); an entry that is not
        one is left out (logged)."""
        params = [("ReceiverHerIds", h) for h in receiver_hers] + [("MessagesToFetch", str(min(count, 100)))]
        answer = await self._call("GET", "/Messages", params=params)
        found = []
        for m in answer if isinstance(answer, list) else []:
            message_id = m.get("id") if isinstance(m, dict) else None
            if isinstance(message_id, str) and answers.is_nhn_id(message_id):
                found.append((message_id, str(m.get("receiverHerId", ""))))
            else:
                log.warning("edi2.unreadable_entry", code="edi2.unreadable_entry", listing="unread messages")
        return found

    async def message(self, message_id: str) -> dict[str, Any]:
        prefix = "/messages" if self.api_version == "3" else "/Messages"
        answer = await self._call("GET", f"{prefix}/{answers.path_id(message_id)}")
        if not isinstance(answer, dict):
            raise ValueError(f"NHN's answer about message {message_id} is not a JSON object")
        return answer

    async def business_document(self, message_id: str) -> bytes:
        prefix = "/messages" if self.api_version == "3" else "/Messages"
        answer = await self._call("GET", f"{prefix}/{answers.path_id(message_id)}/business-document")
        return base64.b64decode(answer["businessDocument"], validate=True)  # a ValueError when it is not base64

    async def status(self, message_id: str) -> list[SentStatus]:
        """The transport state and AppRec of a message we sent, per receiver."""
        if self.api_version == "3":
            answer = await self._call("GET", f"/messages/{answers.path_id(message_id)}/status")
            out = []
            for s in answer.get("statusList", []) if isinstance(answer, dict) else []:
                if not isinstance(s, dict):
                    continue
                info = s.get("apprecInfo") or {}
                out.append(answers.sent_status(s, info.get("appRecStatus"), info.get("appRecErrorList")))
            return out
        states = await self._call("GET", f"/Messages/{answers.path_id(message_id)}/status")
        listed = await self._call("GET", f"/Messages/{message_id}/apprec")
        entries = listed if isinstance(listed, list) else []
        apprecs = {str(a.get("receiverHerId")): a for a in entries if isinstance(a, dict)}
        out = []
        for s in states if isinstance(states, list) else []:
            if not isinstance(s, dict):
                continue
            apprec = apprecs.get(str(s.get("receiverHerId")), {})
            status = apprec.get("appRecStatus") or s.get("appRecStatus")
            out.append(answers.sent_status(s, status, apprec.get("appRecErrorList")))
        return out

    async def apprec(self, message_id: str, *, sender_her: str, status: str, errors: Sequence[tuple[str, str]]) -> str:
        """Answer a received message: NHN builds the AppRec XML towards the EDI sender from the status and
        the 8221 errors (v3 ``POST /messages/{id}/apprec``, v2 ``POST …/apprec/{herId}``)."""
        named = {"1": "Ok", "2": "Rejected", "3": "OkErrorInMessagePart"}[status]
        error_list = [
            {"errorCode": code, "details": text, "oid": "2.16.578.1.12.4.1.1.8221"} for code, text in errors
        ]
        if self.api_version == "3":
            body: dict[str, Any] = {
                "appRecSenderHerId": int(sender_her),
                "appRecStatus": named,
                "appRecErrorList": error_list or None,
                "applicationName": self.application[0],
                "applicationVersion": self.application[1],
            }
            answer = await self._call("POST", f"/messages/{answers.path_id(message_id)}/apprec", json_body=body)
            return answers.nhn_id(answer.get("id") if isinstance(answer, dict) else None, "POST …/apprec")
        body = {"appRecStatus": named, "appRecErrorList": error_list or None}
        path = f"/Messages/{answers.path_id(message_id)}/apprec/{int(sender_her)}"
        return answers.nhn_id(await self._call("POST", path, json_body=body), "POST …/apprec")

    # -- plumbing ---------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        json_body: Mapping[str, Any] | None = None,
    ) -> Any:
        data = None if json_body is None else json.dumps(json_body).encode()
        if data is not None and len(data) > MAX_REQUEST_BYTES:
            raise PermanentDeliveryError(
                f"The request would be {len(data)} bytes; NHN's Meldingstjener takes at most "
                f"{MAX_REQUEST_BYTES // (1024 * 1024)} MB per request (the document travels base64 inside JSON)."
            )
        url = f"{self.base_url}{path}"
        try:
            return await self._exchange(method, path, url, params, data)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the network, while the answer came
            raise TransportError(f"{method} {path}: NHN's answer did not arrive whole ({type(exc).__name__}).") from exc

    async def _exchange(
        self, method: str, path: str, url: str, params: Sequence[tuple[str, str]], data: bytes | None
    ) -> Any:
        for attempt in range(2):
            async with await self._open(method, url, params=params, data=data) as response:
                if response.status == 401 and attempt == 0:
                    authorization = response.request_info.headers.get("Authorization", "")
                    self.helseid.refused(url, response.status, response.headers, authorization)
                    continue
                if response.status == 401:
                    raise AuthenticationRefused(
                        f"NHN's Meldingstjener refused the access token for {method} {path} twice (401): "
                        f"{answers.problem(await read_head(response.content, 65536))} - check the HelseID client "
                        "and the clock."
                    )
                await self._raise_for(response)
                raw = await read_body(response.content, MAX_ANSWER_BYTES)
                if raw is None:
                    raise TransportError(f"NHN's answer to {method} {path} is over {MAX_ANSWER_BYTES} bytes.")
                return answers.read_json(raw) if raw else {}
        raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover

    async def _open(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        data: bytes | None = None,
        accept: str = "application/json",
        streaming: bool = False,
    ) -> aiohttp.ClientResponse:
        headers = {
            "api-version": self.api_version,
            "nhn-source-system": self.source_system,
            "Accept": accept,
            **(await self.helseid.headers(method, url)),
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            return await self.session.request(
                method,
                url,
                params=list(params),
                data=data,
                headers=headers,
                allow_redirects=False,
                # a stream stays open as long as NHN keeps it and says something (a heartbeat will do)
                timeout=(
                    aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=self.stream_idle_s)
                    if streaming
                    else _CALL_TIMEOUT
                ),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{method} {url} failed: {type(exc).__name__}.") from exc

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status < 400:
            return
        problem = answers.problem(await read_head(response.content, 65536))
        where = f"{response.method} {response.url.path}"
        if status == 400:
            raise PermanentDeliveryError(f"NHN refused {where} (400): {problem}", condition="nhn:validation")
        if status == 403:
            raise NotAuthorized(f"NHN refused {where} (403): {problem} - check the HelseID client's HER-ids.")
        if status == 423:
            raise ChannelLocked(f"NHN refused {where} (423 Locked): {problem} - another HelseID client holds it.")
        if retryable_status(status):
            raise TransportError(f"NHN answered {where} {status}: {problem}", retry_after_s=retry_after(
                response.headers.get("Retry-After")))  # fmt: skip
        raise PermanentDeliveryError(f"NHN refused {where} ({status}): {problem}", condition=f"nhn:{status}")


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[Notification]:
    """The ``notification`` events of an SSE stream (aiohttp bounds one line; an event is bounded here); an
    event that cannot be read is left out, logged."""
    event, data, size = "", [], 0
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            size += len(raw)
            if size > MAX_EVENT_BYTES:
                raise TransportError(f"NHN's notification stream sent an event over {MAX_EVENT_BYTES} bytes.")
            data.append(line[5:].lstrip())
        elif not line:
            if event == "notification" and data:
                notification = answers.notification(answers.json_or_none("\n".join(data)))
                if notification is not None:
                    yield notification
            event, data, size = "", [], 0
