"""The address register: HER-id -> party (name, kind, local or remote, how it is reached, certificates).

Addressing follows "tjenestebasert adressering" (HIS 1153): the communication party's HER-id (level 2,
a service or a person under an organisation) is the routing key; the organisation's HER-id (level 1) is
kept beside it, so a message to an unknown service of one of our own organisations (E21) can be told
apart from a message that was never meant for this gateway (misaddressed, no AppRec).

The register is read from a TOML file (config/sio-region.toml): one ``[[party]]`` table per
communication party.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from gateway.errors import ConfigError

__all__ = ["Certificates", "Organisation", "Party", "Register", "dump_register", "is_her_id", "load_register"]

Delivery = Literal["inbox", "folder", "callback"]
AppRecMode = Literal["gateway", "ehr"]


@dataclass(frozen=True)
class Organisation:
    her_id: str
    name: str


@dataclass(frozen=True)
class Certificates:
    """Where a party's certificates (and, for a local party, its keys) are. Empty: the dev PKI layout
    under the data dir (``pki/<her-id>/sign.crt`` ...) is used."""

    sign_cert: Path | None = None
    sign_key: Path | None = None
    enc_cert: Path | None = None
    enc_key: Path | None = None
    previous_enc_cert: Path | None = None
    previous_enc_key: Path | None = None


@dataclass(frozen=True)
class Party:
    """One communication party of the register."""

    her_id: str
    name: str
    kind: str
    organisation: Organisation
    local: bool
    # remote parties: how packets reach them
    adapter: str | None = None
    endpoint: str | None = None
    # local parties: how their EHR takes messages, and who decides their AppRecs
    delivery: Delivery = "inbox"
    folder: Path | None = None
    callback_url: str | None = None
    apprec: AppRecMode = "gateway"
    # local parties: where their EHR answers synchronous requests (POST, the reply in the response); None: it takes none
    sync_url: str | None = None
    certificates: Certificates = field(default_factory=Certificates)

    @property
    def display(self) -> str:
        return f"{self.organisation.name}, {self.name}"


class Register:
    """The parties of a region, looked up by HER-id."""

    def __init__(self, parties: Iterable[Party], *, name: str = "", source: Path | None = None) -> None:
        self.name = name
        self.source = source
        self._parties: dict[str, Party] = {}
        self._organisations: dict[str, Organisation] = {}
        for party in parties:
            if party.her_id in self._parties:
                raise ConfigError(f"HER-id {party.her_id} is listed twice in the register.")
            self._parties[party.her_id] = party
            self._organisations[party.organisation.her_id] = party.organisation
        clash = set(self._parties) & set(self._organisations)
        if clash:
            raise ConfigError(f"HER-id(s) {', '.join(sorted(clash))} used for both a party and an organisation.")

    def __iter__(self) -> Iterator[Party]:
        return iter(self._parties.values())

    def __len__(self) -> int:
        return len(self._parties)

    def get(self, her_id: str | None) -> Party | None:
        return self._parties.get(her_id or "")

    def find(self, her_ids: Iterable[str]) -> Party | None:
        """The first party among HER-ids given most specific first (person, service, organisation)."""
        for her_id in her_ids:
            party = self._parties.get(her_id)
            if party is not None:
                return party
        return None

    def attribute(self, her_ids: Iterable[str]) -> Party | None:
        """The one party a chain of HER-ids (person, service, organisation) names - or None when it names
        none, or names it inconsistently: another registered party, or another party's organisation,
        anywhere in the chain. (Unregistered ids, a GP's personal HER-id say, are allowed.)"""
        ids = list(her_ids)
        party = self.find(ids)
        if party is None:
            return None
        for her_id in ids:
            other = self._parties.get(her_id)
            if other is not None and other is not party:
                return None
            org = self._organisations.get(her_id)
            if org is not None and org.her_id != party.organisation.her_id:
                return None
        return party

    def organisation(self, her_id: str | None) -> Organisation | None:
        return self._organisations.get(her_id or "")

    def is_local_organisation(self, her_id: str | None) -> bool:
        return any(p.local and p.organisation.her_id == her_id for p in self._parties.values())

    @property
    def local_parties(self) -> list[Party]:
        return [p for p in self._parties.values() if p.local]

    @property
    def remote_parties(self) -> list[Party]:
        return [p for p in self._parties.values() if not p.local]

    def replaced(self, parties: Iterable[Party]) -> Register:
        """A copy with the given parties swapped in (by HER-id); used by the replay harness."""
        updated = dict(self._parties)
        for party in parties:
            updated[party.her_id] = party
        return Register(updated.values(), name=self.name, source=self.source)


def load_register(path: Path) -> Register:
    """Read a region register file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Region register {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Region register {path} is not valid TOML: {exc}.") from None
    base = path.resolve().parent
    parties = [_party(entry, i, base, path) for i, entry in enumerate(data.get("party", []))]
    if not parties:
        raise ConfigError(f"Region register {path} lists no [[party]].")
    return Register(parties, name=str(data.get("region", {}).get("name", "")), source=path)


_PARTY_KEYS = {
    "her_id",
    "name",
    "kind",
    "organisation",
    "location",
    "adapter",
    "endpoint",
    "delivery",
    "folder",
    "callback_url",
    "apprec",
    "sync_url",
    "certificates",
}
_CERT_KEYS = {f for f in Certificates.__dataclass_fields__}


def _party(entry: dict[str, object], index: int, base: Path, source: Path) -> Party:
    where = f"{source}, party #{index + 1}"
    unknown = sorted(set(entry) - _PARTY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}.")
    try:
        her_id = _her(entry["her_id"], where)
        org = entry["organisation"]
        if not isinstance(org, dict):
            raise ConfigError(f"{where}: organisation must be a table {{ her_id, name }}.")
        organisation = Organisation(her_id=_her(org["her_id"], where), name=str(org["name"]))
        location = entry.get("location", "local")
        if location not in ("local", "remote"):
            raise ConfigError(f"{where}: location must be local or remote, not {location!r}.")
        party = Party(
            her_id=her_id,
            name=str(entry["name"]),
            kind=str(entry["kind"]),
            organisation=organisation,
            local=location == "local",
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc.args[0]} is required.") from None
    delivery = entry.get("delivery", "inbox")
    if delivery not in ("inbox", "folder", "callback"):
        raise ConfigError(f"{where}: delivery must be inbox, folder or callback, not {delivery!r}.")
    apprec = entry.get("apprec", "gateway")
    if apprec not in ("gateway", "ehr"):
        raise ConfigError(f"{where}: apprec must be gateway or ehr, not {apprec!r}.")
    certs = entry.get("certificates", {})
    if not isinstance(certs, dict) or set(certs) - _CERT_KEYS:
        raise ConfigError(f"{where}: certificates takes {', '.join(sorted(_CERT_KEYS))}.")
    folder = entry.get("folder")
    party = replace(
        party,
        adapter=_opt_str(entry.get("adapter")),
        endpoint=_opt_str(entry.get("endpoint")),
        delivery=delivery,
        folder=(base / str(folder)) if folder else None,
        callback_url=_opt_str(entry.get("callback_url")),
        apprec=apprec,
        sync_url=_opt_str(entry.get("sync_url")),
        certificates=Certificates(**{k: base / str(v) for k, v in certs.items()}),
    )
    if not party.local and not party.adapter:
        party = replace(party, adapter="http")
    if party.delivery == "folder" and party.folder is None:
        raise ConfigError(f"{where}: delivery = folder needs folder = <path>.")
    if party.delivery == "callback" and not party.callback_url:
        raise ConfigError(f"{where}: delivery = callback needs callback_url.")
    if party.sync_url and not party.local:
        raise ConfigError(f"{where}: sync_url is where a local party's EHR answers; a remote party has none.")
    return party


def is_her_id(value: str) -> bool:
    """A HER-id as NHN gives them: 1 to 12 ASCII digits (``isdigit`` alone takes "²" and other scripts' digits)."""
    return value.isascii() and value.isdigit() and 1 <= len(value) <= 12


def _her(value: object, where: str) -> str:
    text = str(value).strip()
    if not is_her_id(text):
        raise ConfigError(f"{where}: HER-id {value!r} is not a number.")
    return text


def _opt_str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def dump_register(register: Register) -> str:
    """The register as a region file (the replay harness writes the simulated region's this way)."""

    def q(value: object) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"[region]\nname = {q(register.name)}\n"]
    for p in register:
        lines.append("[[party]]")
        lines.append(f"her_id = {q(p.her_id)}")
        lines.append(f"name = {q(p.name)}")
        lines.append(f"kind = {q(p.kind)}")
        lines.append(f"organisation = {{ her_id = {q(p.organisation.her_id)}, name = {q(p.organisation.name)} }}")
        lines.append(f"location = {q('local' if p.local else 'remote')}")
        if not p.local:
            lines.append(f"adapter = {q(p.adapter or 'http')}")
            if p.endpoint:
                lines.append(f"endpoint = {q(p.endpoint)}")
        else:
            lines.append(f"delivery = {q(p.delivery)}")
            lines.append(f"apprec = {q(p.apprec)}")
            if p.folder:
                lines.append(f"folder = {q(p.folder)}")
            if p.callback_url:
                lines.append(f"callback_url = {q(p.callback_url)}")
            if p.sync_url:
                lines.append(f"sync_url = {q(p.sync_url)}")
        certs = {k: v for k, v in p.certificates.__dict__.items() if v is not None}
        if certs:
            inner = ", ".join(f"{k} = {q(v)}" for k, v in certs.items())
            lines.append(f"certificates = {{ {inner} }}")
        lines.append("")
    return "\n".join(lines)
