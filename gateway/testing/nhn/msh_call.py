"""One request to the simulated Meldingstjener's API after routing and authentication (:class:`Call`):
who asks, in which version, and the helpers every handler uses to read and check what was asked - the
query and path parameters, the JSON body (the 35 MB limit, the media type), HER-ids and authorisation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.testing.nhn.msh_simulator import Simulator
from gateway.testing.nhn.msh_state import MessageRecord, MshError, MshState
from gateway.testing.nhn.principal import Principal

__all__ = ["Call"]

_INT32_MAX = 2**31 - 1
_JSON_TYPES = ("application/json", "text/json")


@dataclass
class Call:
    """One API request after routing and authentication: who asks, in which version, and the helpers
    every handler uses to read and check what was asked."""

    request: web.Request
    sim: Simulator
    principal: Principal
    version: str
    params: dict[str, str]
    request_id: str

    @property
    def state(self) -> MshState:
        return self.sim.state

    # query and path ---------------------------------------------------------------------------------

    def query_values(self, name: str) -> list[str]:
        """A query parameter's values, the name matched case-insensitively (ASP.NET model binding)."""
        return [v for k, v in self.request.query.items() if k.lower() == name.lower()]

    def query_int(self, name: str, errors: list[str], *, low: int, high: int, default: int | None = None) -> int | None:
        values = self.query_values(name)
        if not values:
            return default
        try:
            value = int(values[0])
        except ValueError:
            errors.append(f"The value '{values[0]}' is not valid for {name}.")
            return None
        if not low <= value <= high:
            errors.append(f"{name} must be between {low} and {high}.")
            return None
        return value

    def query_her_ids(self, name: str, errors: list[str], *, max_items: int) -> list[str]:
        """1 to ``max_items`` unique HER-ids, the parameter repeated (``HerIds=1&HerIds=2``)."""
        values = self.query_values(name)
        ids = [self.her_id(_int_or_text(v), name, errors) for v in values]
        if not values:
            errors.append(f"The {name} field is required.")
        elif len(values) > max_items or len(set(values)) != len(values):
            errors.append(f"{name} must hold 1 to {max_items} unique HER-ids.")
        return [h for h in ids if h]

    def path_uuid(self, name: str = "id") -> str:
        value = self.params[name]
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise MshError.invalid([f"The value '{value}' is not valid for {name}: a GUID is required."]) from None

    def path_her_id(self, name: str) -> str:
        errors: list[str] = []
        her = self.her_id(_int_or_text(self.params[name]), name, errors)
        if her is None:
            raise MshError.invalid(errors)
        return her

    # the body ---------------------------------------------------------------------------------------

    async def json_body(self) -> dict[str, Any]:
        """The JSON object of the request, at most ``max_request_bytes`` long (unknown fields are kept,
        and the handlers ignore them, as NHN's tolerant model binding does)."""
        limit = self.sim.max_request_bytes
        length = self.request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        media = (self.request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not (media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))):
            raise MshError(415, f"Unsupported Media Type: {media or 'none'}; send application/json.")
        chunks, size = [], 0
        async for chunk in self.request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise MshError.invalid(["A non-empty request body is required."])
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MshError.invalid([f"The request body is not valid JSON: {exc}"]) from None
        if not isinstance(body, dict):
            raise MshError.invalid(["The request body must be a JSON object."])
        return body

    @staticmethod
    def her_id(value: Any, name: str, errors: list[str], *, required: bool = True) -> str | None:
        """A HER-id as JSON gives it (an int32 above 0), as digits; None and an error when it is not one."""
        if value is None:
            if required:
                errors.append(f"The {name} field is required.")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT32_MAX:
            errors.append(f"{name} must be a HER-id (an integer from 1 to {_INT32_MAX}), not {value!r}.")
            return None
        return str(value)

    def her_id_list(self, value: Any, name: str, errors: list[str]) -> list[str]:
        if not isinstance(value, list) or not value:
            errors.append(f"The {name} field is required and must list at least one HER-id.")
            return []
        ids = [self.her_id(v, f"{name}[{i}]", errors) for i, v in enumerate(value)]
        found = [h for h in ids if h]
        if len(set(found)) != len(found):
            errors.append(f"{name} must not repeat a HER-id.")
        return found

    # authorisation ----------------------------------------------------------------------------------

    def allow(self, her_ids: Iterable[str]) -> None:
        """403 unless the principal may act for every one of ``her_ids``."""
        refused = self.principal.not_allowed(list(dict.fromkeys(her_ids)))
        if refused:
            raise MshError.forbidden(refused)

    def allow_message(self, record: MessageRecord) -> None:
        """403 unless the principal acts for the message's sender or one of its receivers."""
        if not any(self.principal.may_act_for(h) for h in record.parties):
            raise MshError.forbidden(record.parties)

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(data, status=status, headers=headers)


def _int_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _too_large(limit: int) -> MshError:
    return MshError(
        400, f"The request body is too large: the Meldingstjener accepts at most {limit / 2**20:g} MB ({limit} bytes)."
    )
