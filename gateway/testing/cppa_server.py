"""A stand-in for NHN's CPPA REST service, for tests and local runs: it serves the CPP and CPA documents of
Helsenorge.Messaging's tests (``../shared/standards/nhn/cppa/``) by path, as the service does:

* ``GET {prefix}Profiles/{herId}`` - the CPP whose PartyInfo has that HER-id;
* ``GET {prefix}Agreements/HerIds/{a}/{b}`` - the CPA between the two, in either order;
* 404 for every other HER-id or pair (and every other path).

Which HER-ids a document serves is read from the document itself (``PartyId type="HER"``), never from its
file name: one of the files is named for another HER-id than the one inside. Where several files answer the
same path (the folder has several CPAs for 93238 and 93252), the first by file name wins; give ``files`` to
choose. NHN's empty ``xsi:nil`` placeholders serve no HER-id. The files are read from ``../shared`` when
the documents are loaded and never copied into the project: their licence stays with them there.

Like the real service it wants ``Accept`` to allow XML (406 otherwise) and, when the app is made with an
``authorizer``, a request that passes it: NHN's DPoP variant (``/v2/``) takes HelseID's DPoP-bound tokens with
scope ``nhn:cppa/access-with-dpop``, which :class:`~gateway.testing.nhn.dpop_check.DpopAuthorizer` checks as
it does for the Meldingstjener (token signature, issuer, audience ``nhn:cppa``, scope, proof, nonce; 401
otherwise). :class:`CppaControl` lets a test make it fail
(``fail_status`` 503, say, with a ``Retry-After``), answer slowly, or answer a path with bytes of its own (a
hostile document). The CPPA names are written out here again rather than imported from the client
(adapters/cppa): a wrong name in the client must fail the tests, not be shared by both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.config import PROJECT_ROOT
from gateway.testing.nhn.principal import Authorizer
from gateway.xml import parse

__all__ = [
    "CONTROL",
    "REQUESTS",
    "CppaControl",
    "CppaDocuments",
    "accepts_xml",
    "cppa_app",
    "cppa_dir",
    "load_documents",
    "running",
]

_NS: Final = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
_CPP: Final = f"{{{_NS}}}CollaborationProtocolProfile"
_CPA: Final = f"{{{_NS}}}CollaborationProtocolAgreement"
_XML: Final = "application/xml; charset=utf-8"
_XML_TYPES: Final = frozenset({"application/xml", "text/xml", "application/*", "text/*", "*/*"})


@dataclass(frozen=True)
class CppaDocuments:
    """What the double serves: HER-id -> CPP bytes, and a pair of HER-ids -> CPA bytes; ``files`` says
    which file each answer came from (for a test's messages)."""

    profiles: Mapping[str, bytes]
    agreements: Mapping[frozenset[str], bytes]
    files: Mapping[str, Path] = field(default_factory=dict)


class CppaControl:
    """What a test changes while the double serves: failures, slowness, answers of its own."""

    def __init__(self) -> None:
        #: answer every request with this status (503, say) instead of a document; None: serve
        self.fail_status: int | None = None
        self.retry_after: str | None = None
        #: wait this long before answering (a service that hangs)
        self.delay_s: float = 0.0
        #: path (``Profiles/93238``) -> (status, body): answered as given, after the auth and Accept checks
        self.answers: dict[str, tuple[int, bytes]] = {}


#: every path asked for that passed the auth and Accept checks, in order (tests count them)
REQUESTS: Final = web.AppKey("cppa_requests", list[str])
CONTROL: Final = web.AppKey("cppa_control", CppaControl)
_DOCUMENTS: Final = web.AppKey("cppa_documents", CppaDocuments)


def cppa_dir(shared: Path | None = None) -> Path:
    """Where the CPPA files are: ``<shared>/standards/nhn/cppa``, ``../shared`` by default."""
    return (shared if shared is not None else PROJECT_ROOT.parent / "shared") / "standards" / "nhn" / "cppa"


def load_documents(files: Iterable[Path] | None = None, *, shared: Path | None = None) -> CppaDocuments:
    """The documents to serve: ``files``, or every ``*.xml`` of the CPPA folder, indexed by the HER-ids
    their PartyInfo elements name. A file that is not a CPP or CPA (a nil placeholder) serves nothing."""
    paths = sorted(cppa_dir(shared).glob("*.xml")) if files is None else list(files)
    profiles: dict[str, bytes] = {}
    agreements: dict[frozenset[str], bytes] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        data = path.read_bytes()
        root = parse(data).root
        her_ids = [
            str(int((pid.text or "").strip()))
            for pid in root.iterfind(f"{{{_NS}}}PartyInfo/{{{_NS}}}PartyId")
            if (pid.get(f"{{{_NS}}}type") or pid.get("type")) == "HER" and (pid.text or "").strip().isdigit()
        ]
        if root.tag == _CPP and her_ids and her_ids[0] not in profiles:
            profiles[her_ids[0]] = data
            sources[f"Profiles/{her_ids[0]}"] = path
        elif root.tag == _CPA and len(set(her_ids)) == 2 and frozenset(her_ids) not in agreements:
            agreements[frozenset(her_ids)] = data
            first, second = sorted(her_ids)
            sources[f"Agreements/HerIds/{first}/{second}"] = path
    return CppaDocuments(profiles, agreements, sources)


def cppa_app(
    documents: CppaDocuments | None = None,
    *,
    authorizer: Authorizer | None = None,
    prefix: str = "/",
    control: CppaControl | None = None,
) -> web.Application:
    """The double. ``authorizer``: what every request must pass (None: no auth). ``prefix``: the base path
    (``/v2/`` for NHN's DPoP variant)."""
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError("The prefix starts and ends with '/'.")
    app = web.Application()
    app[_DOCUMENTS] = documents if documents is not None else load_documents()
    app[REQUESTS] = []
    app[CONTROL] = control or CppaControl()

    async def handle(request: web.Request) -> web.StreamResponse:
        if authorizer is not None:
            await authorizer(request)  # a refusal is a web.HTTPUnauthorized, sent as it is
        return await _handle(request)

    app.router.add_get(prefix + "{path:.*}", handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    if not accepts_xml(request.headers.get("Accept")):
        return web.Response(status=406, text="This service answers application/xml only.")
    path = request.match_info["path"]
    request.app[REQUESTS].append(path)
    control = request.app[CONTROL]
    if control.delay_s:
        await asyncio.sleep(control.delay_s)
    if control.fail_status is not None:
        headers = {"Retry-After": control.retry_after} if control.retry_after else {}
        return web.Response(status=control.fail_status, text="The service is not available.", headers=headers)
    if path in control.answers:
        status, given = control.answers[path]
        return web.Response(status=status, body=given, headers={"Content-Type": _XML})
    document = _document(request.app[_DOCUMENTS], path)
    if document is None:
        return web.Response(status=404, text="Not found.")
    return web.Response(body=document, headers={"Content-Type": _XML})


def _document(documents: CppaDocuments, path: str) -> bytes | None:
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "Profiles" and _her_id(parts[1]):
        return documents.profiles.get(str(int(parts[1])))
    if len(parts) == 4 and parts[:2] == ["Agreements", "HerIds"] and _her_id(parts[2]) and _her_id(parts[3]):
        return documents.agreements.get(frozenset({str(int(parts[2])), str(int(parts[3]))}))
    return None


def _her_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 12


def accepts_xml(header: str | None) -> bool:
    """Whether an ``Accept`` header allows application/xml (no header: anything is acceptable)."""
    if header is None or not header.strip():
        return True
    for item in header.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        quality = next((p.partition("=")[2] for p in params if p.startswith("q=")), "1")
        try:
            acceptable = float(quality) > 0
        except ValueError:
            acceptable = False
        if media in _XML_TYPES and acceptable:
            return True
    return False


@asynccontextmanager
async def running(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL (``http://127.0.0.1:<port>/``)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0).start()
        port = runner.addresses[0][1]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()
