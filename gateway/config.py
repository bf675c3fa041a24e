"""Configuration: TOML -> frozen dataclasses, one per concern, with defaults written on the fields.

Paths in a config file are relative to that file; paths of things the gateway makes itself (store, PKI,
dev token) are relative to the data directory. The one exception is the default config inside an installed
package (:func:`load_settings`). Unknown keys are errors, so a typo never silently falls back to a default.
Environment variables override a few deployment settings (docs/configuration.md):

    GATEWAY_CONFIG            the config file (default: config/gateway.toml, shipped with the package)
    GATEWAY_DATA_DIR          [gateway] data_dir
    GATEWAY_HOST, GATEWAY_PORT  [api] host / port
    GATEWAY_SCHEMAS_BUNDLE    [schemas] bundle
    GATEWAY_LOG_FORMAT, GATEWAY_LOG_LEVEL  [log] format / level
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from gateway.errors import ConfigError
from gateway.xml import DEFAULT_MAX_BYTES

__all__ = [
    "PROJECT_ROOT",
    "ApiSettings",
    "DeliverySettings",
    "DropFolderSettings",
    "GatewaySettings",
    "HousekeepingSettings",
    "LimitsSettings",
    "LogSettings",
    "ReceiptSettings",
    "RetrySettings",
    "RouteSettings",
    "RoutingSettings",
    "SchemaSettings",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "TokenSettings",
    "default_config_path",
    "load_settings",
    "redacted_url",
    "resource_dir",
]

#: The checkout this package lives in, when it lives in one (tests find ``../shared`` and ``fixtures/`` from
#: here). Installed, this is site-packages: what the gateway reads at run time is found by :func:`resource_dir`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where an installed package keeps the files it ships (pyproject.toml maps ``config/`` and ``schemas/`` here).
_PACKAGED = Path(__file__).resolve().parent / "resources"


def redacted_url(url: str) -> str:
    """``url`` with any password in it - ``user:pw@`` or a ``password=`` query parameter (libpq's) - replaced by
    ``***`` (for logs and errors)."""
    url = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def resource_dir(name: Literal["config", "schemas"]) -> Path:
    """A folder the gateway ships: ``config`` (default config, SiO register) or ``schemas`` (catalog, own XSDs).

    Package data in ``gateway/resources/`` of an installed package (a wheel, ``pip install .``); in a checkout,
    whose editable install copies nothing, the top-level folder of that name.
    """
    packaged = _PACKAGED / name
    return packaged if packaged.is_dir() else PROJECT_ROOT / name


def default_config_path() -> Path:
    return Path(os.environ.get("GATEWAY_CONFIG") or resource_dir("config") / "gateway.toml")


@dataclass(frozen=True)
class GatewaySettings:
    name: str = "sio-hub"
    data_dir: Path = Path("var")
    region: Path = Path("sio-region.toml")


@dataclass(frozen=True)
class TokenSettings:
    """An API client: its bearer token (plain or as SHA-256 hex), the local HER-ids it may send for."""

    name: str
    token: str = ""
    token_sha256: str = ""
    senders: tuple[str, ...] = ()
    admin: bool = False


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: tuple[TokenSettings, ...] = ()


@dataclass(frozen=True)
class SchemaSettings:
    bundle: Path | None = None
    catalog: Path = resource_dir("schemas") / "catalog.toml"
    max_message_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class LogSettings:
    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


@dataclass(frozen=True)
class DeliverySettings:
    poll_interval_s: float = 0.5
    batch: int = 32
    concurrency: int = 16
    lease_s: float = 60.0
    send_timeout_s: float = 30.0
    shutdown_grace_s: float = 10.0


@dataclass(frozen=True)
class RouteSettings:
    """Per-route overrides of the retry policy and ordering (a route is a receiver HER-id)."""

    ordered: bool | None = None
    concurrency: int | None = None
    base_s: float | None = None
    factor: float | None = None
    cap_s: float | None = None
    max_attempts: int | None = None
    ttl_h: float | None = None
    abandoned: Literal["dead", "retry"] | None = None


@dataclass(frozen=True)
class RetrySettings:
    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 3600.0
    max_attempts: int = 60
    ttl_h: float = 96.0
    ordered: bool = True
    route_concurrency: int = 4
    breaker_threshold: int = 5
    #: what becomes of a delivery whose transport gave up on the receiver after taking it (NHN's
    #: ``Abandoned``: no receipt after its resends): ``dead`` for an operator, or ``retry`` - sent again
    #: with the backoff, which the receiver may get twice (it discards the copy by its msgId)
    abandoned: Literal["dead", "retry"] = "dead"
    routes: Mapping[str, RouteSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class SecuritySettings:
    protection: Literal["cms", "none"] = "cms"
    dev_pki: bool = False  # make a dev PKI under the data dir on start (the embedded default only)
    trust_anchors: tuple[Path, ...] = (Path("pki/ca.crt"),)
    crls: tuple[str, ...] = ("pki/ca.crl",)
    crl_refresh_s: float = 3600.0
    crl_timeout_s: float = 10.0
    allow_3des: bool = False
    unverified_answer_s: float = 0.25  # a packet that does not verify is answered no sooner (no timing oracle)


@dataclass(frozen=True)
class RoutingSettings:
    """How receivers outside the register are reached: ``default_adapter`` names the transport (``edi2``:
    NHN's Meldingstjener reaches every HER-id in Norway); None refuses them E21."""

    default_adapter: str | None = None


@dataclass(frozen=True)
class ReceiptSettings:
    deadline_h: float = 96.0
    warning_h: float = 72.0
    deadline_by_kind: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HousekeepingSettings:
    retention_days: float = 90.0
    lease_reaper_s: float = 30.0
    deadline_check_s: float = 60.0
    certificate_warning_days: tuple[int, ...] = (30, 14, 7)
    maintenance_s: float = 3600.0
    refusals_kept: int = 10000  # packets refused at the transport: metadata of the newest this many


@dataclass(frozen=True)
class LimitsSettings:
    """What the HTTP service lets clients hold: time, concurrency and header size (docs/api.md, Limits)."""

    body_read_timeout_s: float = 30.0  # a request's body must arrive within this (else 408)
    idle_timeout_s: float = 30.0  # an idle keep-alive connection, or unfinished request headers, is closed
    max_concurrent_requests: int = 64  # requests read and handled at once, all clients together
    max_body_bytes_in_flight: int = 64 * 1024 * 1024  # declared body bytes read and handled at once
    max_concurrent_per_client: int = 32  # per token name, or per peer address without a token (else 429)
    queue_wait_s: float = 2.0  # how long a request waits for a free slot before 503
    retry_after_s: int = 2  # the Retry-After of a 429 or 503
    max_header_bytes: int = 8190  # one request line, header name or header value
    max_headers: int = 64
    health_timeout_s: float = 2.0  # /healthz: the worker threads and the store must answer within this

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise ConfigError(f"limits.{f.name} must be greater than 0.")


@dataclass(frozen=True)
class DropFolderSettings:
    """A folder a local EHR drops messages into (instead of POST /v1/messages), for the senders listed.

    ``settle_s``: a file is taken only once its size and times have not changed for this long, so one
    written in place in several steps is not taken half-written (docs/transports.md).
    """

    path: Path
    senders: tuple[str, ...] = ()
    name: str = ""
    poll_interval_s: float = 1.0
    settle_s: float = 1.0

    def __post_init__(self) -> None:
        if self.settle_s < 0:
            raise ConfigError(f"drop_folders: settle_s of {self.path} must be 0 or more.")


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: where the gateway keeps its messages. ``sqlite:///<path>`` - relative to the data dir, or
    absolute with a fourth slash (``sqlite:////var/lib/gateway/gateway.sqlite``) - is the embedded default;
    gateway/store/factory.py builds the store from it."""

    url: str = "sqlite:///gateway.sqlite"

    def __post_init__(self) -> None:
        scheme, sep, rest = self.url.partition("://")
        if not sep or scheme not in _STORE_SCHEMES or not rest.strip("/"):
            raise ConfigError(
                f"[store] url must be sqlite:///<file> or postgresql://<user>@<host>/<database>, not {self.url!r}."
            )


_STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclass(frozen=True)
class Settings:
    """Everything the gateway is configured with. ``source`` is the file it was read from."""

    gateway: GatewaySettings = GatewaySettings()
    api: ApiSettings = ApiSettings()
    schemas: SchemaSettings = SchemaSettings()
    log: LogSettings = LogSettings()
    delivery: DeliverySettings = DeliverySettings()
    retry: RetrySettings = RetrySettings()
    security: SecuritySettings = SecuritySettings()
    routing: RoutingSettings = RoutingSettings()
    receipts: ReceiptSettings = ReceiptSettings()
    housekeeping: HousekeepingSettings = HousekeepingSettings()
    limits: LimitsSettings = LimitsSettings()
    store: StoreSettings = StoreSettings()
    adapters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    drop_folders: tuple[DropFolderSettings, ...] = ()
    source: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.gateway.data_dir

    def in_data_dir(self, path: Path | str) -> Path:
        """A path of something the gateway keeps itself (PKI, store), relative to the data directory."""
        p = Path(path)
        return p if p.is_absolute() else self.gateway.data_dir / p


_T = TypeVar("_T")


def load_settings(
    path: Path | str | None = None,
    *,
    data_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read a config file (default: ``config/gateway.toml``) and apply environment overrides.

    The default config inside an installed package sits in site-packages, where no gateway keeps its data and
    no schema bundle lies beside it: read from there, its data dir is ``var`` of the working directory and it
    has no bundle, unless GATEWAY_DATA_DIR / GATEWAY_SCHEMAS_BUNDLE (relative to the working directory) or
    ``data_dir`` say otherwise. In a checkout the same file keeps its own relative paths.
    """
    env = os.environ if environ is None else environ
    source = Path(path) if path else default_config_path()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {source} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {source} is not valid TOML: {exc}.") from None
    _apply_env(raw, env)
    if source.resolve().is_relative_to(_PACKAGED):
        cwd = Path.cwd()
        raw.setdefault("gateway", {})["data_dir"] = str(cwd / (env.get("GATEWAY_DATA_DIR") or "var"))
        bundle = env.get("GATEWAY_SCHEMAS_BUNDLE")
        raw.setdefault("schemas", {})["bundle"] = str(cwd / bundle) if bundle else ""
    base = source.resolve().parent
    settings = _build(Settings, raw, "", base)
    gw = settings.gateway
    chosen_dir = Path(data_dir) if data_dir else gw.data_dir
    gw = dataclasses.replace(
        gw,
        data_dir=(
            chosen_dir if chosen_dir.is_absolute() else (Path.cwd() if data_dir else base) / chosen_dir
        ).resolve(),
        region=gw.region if gw.region.is_absolute() else base / gw.region,
    )
    return dataclasses.replace(settings, gateway=gw, source=source.resolve())


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    table = {
        "GATEWAY_DATA_DIR": ("gateway", "data_dir", str),
        "GATEWAY_HOST": ("api", "host", str),
        "GATEWAY_PORT": ("api", "port", int),
        "GATEWAY_SCHEMAS_BUNDLE": ("schemas", "bundle", str),
        "GATEWAY_LOG_FORMAT": ("log", "format", str),
        "GATEWAY_LOG_LEVEL": ("log", "level", str),
        "GATEWAY_STORE_URL": ("store", "url", str),
    }
    for var, (section, key, conv) in table.items():
        if var in env:
            try:
                raw.setdefault(section, {})[key] = conv(env[var])
            except ValueError:
                raise ConfigError(f"Environment variable {var}={env[var]!r} is not a valid {key}.") from None


def _build(cls: type[_T], data: Any, where: str, base: Path) -> _T:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where or 'top level'}] must be a table, not {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields) - {"source"})
    if unknown:
        raise ConfigError(f"Unknown setting(s) in [{where or 'top level'}]: {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}" if where else name, base)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{where or 'top level'}] is incomplete: {exc}.") from None


def _convert(hint: Any, value: Any, where: str, base: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if (value is None or value == "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where, base)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, base)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}, not {value!r}.")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list.")
        return tuple(_convert(args[0], v, f"{where}[{i}]", base) for i, v in enumerate(value))
    if origin in (Mapping, dict) or (origin is not None and issubclass(origin, Mapping)):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table.")
        return {str(k): _convert(args[1], v, f"{where}.{k}", base) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a path string.")
        p = Path(value)
        # data-dir things (pki/...) stay relative; they are resolved against the data dir when used
        return p if p.is_absolute() or where.startswith("security.") else (base / p).resolve()
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number.")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number.")
        return value
    if hint is str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string.")
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {hint!r}.")  # pragma: no cover - programming error
