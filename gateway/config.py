"""gbgw configuration: a TOML file plus ``GBGW_<SECTION>__<KEY>`` environment overrides.

Rules:
- Every table forbids unknown keys; the error names the dotted key (``sip.prot``,
  ``zone[0].colour``) and suggests the nearest known one.
- The environment wins over the file. ``GBGW_SIP__PORT=15060`` sets ``sip.port``; list and table
  values are JSON (``GBGW_SIP__TRANSPORTS='["udp"]'``); an array of tables is replaced whole
  (``GBGW_TOKEN='[{"name": "ops", "secret": "..."}]'``) or edited per item
  (``GBGW_TOKEN__0__SECRET=...``, the item must exist in the file). A ``GBGW_`` variable that
  names no key is an error.
- Every problem is collected and raised once as ``ConfigError``, one dotted key per line.

The merge is explicit rather than pydantic-settings' env source: that source ignores
``GBGW_`` variables naming no key, and its errors do not say which variable was wrong.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator as _model_validator
from pydantic.fields import FieldInfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "GatewaySection",
    "HttpConfig",
    "LogConfig",
    "MediaConfig",
    "SipConfig",
    "StorageConfig",
    "TokenConfig",
    "UpstreamConfig",
    "WebRtcConfig",
    "ZoneConfig",
    "load_config",
    "normalise_storage_url",
    "to_toml_text",
]

ENV_PREFIX = "GBGW_"
REDACTED = "***"
Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """An invalid configuration; ``problems`` holds ``(dotted key, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "configuration") -> None:
        self.problems = tuple(problems)
        lines = [f"invalid {source}:"]
        lines += [f"  {key}: {msg}" if key else f"  {msg}" for key, msg in self.problems]
        super().__init__("\n".join(lines))


# --- field checks -------------------------------------------------------------------------

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _id(value: str) -> str:
    if not re.fullmatch("[0-9]{20}", value):
        raise ValueError(f"an ID must be 20 digits, got {value!r}")
    return value


def _domain(value: str) -> str:
    if not re.fullmatch("[0-9]{10}", value):
        raise ValueError(f"a domain must be 10 digits, got {value!r}")
    return value


def _host(value: str) -> str:
    if value == "" or (not _is_ip(value) and not _HOSTNAME.fullmatch(value)):
        raise ValueError(f"must be an IP address or a host name, got {value!r}")
    return value


def _optional_host(value: str) -> str:
    return value and _host(value)


def _label(value: str) -> str:
    if not value.strip() or len(value) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"must be 1-64 printable characters, got {value!r}")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_storage_url(url: str) -> str:
    """Map ``sqlite://`` / ``postgres[ql]://`` URLs to their asyncio drivers (else ValueError)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL: {_redact_url(url)!r}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite", "aiosqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("an SQLite URL needs a file path, e.g. sqlite:///./gbgw-data/gbgw.db")
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB"
        )
    return parsed.render_as_string(hide_password=False)


def _redact_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return REDACTED if "@" in url else url
    secret_query = {k: REDACTED for k in parsed.query if re.search("pass|secret|token", k, re.I)}
    if secret_query:
        parsed = parsed.update_query_dict(secret_query)
    return parsed.render_as_string(hide_password=True)


GatewayId = Annotated[str, AfterValidator(_id)]
OptionalId = Annotated[str, AfterValidator(lambda v: v and _id(v))]
Domain = Annotated[str, AfterValidator(_domain)]
OptionalDomain = Annotated[str, AfterValidator(lambda v: v and _domain(v))]
Host = Annotated[str, AfterValidator(_host)]
OptionalHost = Annotated[str, AfterValidator(_optional_host)]
Label = Annotated[str, AfterValidator(_label)]
Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
CameraClass = Annotated[int, Field(ge=1, le=3)]
Transport = Literal["udp", "tcp"]
CivilCodePrefix = Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]
TypeCode = Annotated[str, Field(pattern=r"^[0-9]{3}$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )


# --- sections -----------------------------------------------------------------------------


class GatewaySection(_Model):
    """``[gateway]``: this platform's identity and where it keeps its data."""

    id: GatewayId = "62090000002000000001"
    domain: Domain = "6209000000"
    name: Label = "gbgw"
    data_dir: str = Field(default="./gbgw-data", min_length=1)

    @field_validator("id")
    @classmethod
    def _platform_type(cls, value: str) -> str:
        if value[10:13] != "200":
            raise ValueError(
                f"digits 11-13 (type code) must be 200, a SIP server/platform; got {value[10:13]}"
            )
        return value

    @_model_validator(mode="after")
    def _domain_matches_id(self) -> GatewaySection:
        if self.domain != self.id[:10]:
            raise ValueError(
                f"gateway.domain {self.domain!r} must equal the first 10 digits of gateway.id "
                f"({self.id[:10]!r}): the SIP domain is the server ID's center code + industry code"
            )
        return self

    @property
    def data_path(self) -> Path:
        """``data_dir`` with ``~`` expanded (relative paths stay relative to the cwd)."""
        return Path(self.data_dir).expanduser()


class SipConfig(_Model):
    """``[sip]``: signalling listener, registration and keepalive policy (times in seconds)."""

    listen: Host = "0.0.0.0"
    port: Port = 5060
    transports: tuple[Transport, ...] = ("udp", "tcp")
    advertise: OptionalHost = ""
    password: str = "12345678"
    register_expires: int = Field(default=3600, ge=1)
    register_min_expires: int = Field(default=60, ge=1)
    register_max_expires: int = Field(default=86400, ge=1)
    keepalive_interval: Seconds = 60.0
    keepalive_max_missed: int = Field(default=3, ge=1)
    auth_max_failures: int = Field(default=5, ge=1)
    auth_lockout: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    tcp_idle_timeout: Seconds = 600.0
    max_message_size: int = Field(default=65536, ge=1024, le=1_048_576)

    @field_validator("transports")
    @classmethod
    def _some_transport(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('needs at least one of "udp", "tcp"')
        return tuple(dict.fromkeys(value))

    @_model_validator(mode="after")
    def _expires_in_bounds(self) -> SipConfig:
        lo, hi = self.register_min_expires, self.register_max_expires
        if not lo <= self.register_expires <= hi:
            raise ValueError(
                f"sip.register_expires ({self.register_expires}) must lie within "
                f"sip.register_min_expires..sip.register_max_expires ({lo}..{hi})"
            )
        return self


class HttpConfig(_Model):
    """``[http]``: the operator API; a bearer token is required off loopback."""

    listen: Host = "127.0.0.1"
    port: Port = 8080
    token: str = ""

    @_model_validator(mode="after")
    def _token_off_loopback(self) -> HttpConfig:
        if not self.token and not _is_loopback(self.listen):
            raise ValueError(
                "http.token is required when http.listen is not loopback "
                f"(listen = {self.listen!r})"
            )
        return self


class MediaConfig(_Model):
    """``[media]``: RTP receivers; ``idle_close`` seconds after the last consumer leaves."""

    listen: Host = "0.0.0.0"
    advertise: OptionalHost = ""
    rtp_ports: str = "30000-30999"
    idle_close: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    transport: Literal["udp", "tcp-passive", "tcp-active"] = "udp"
    timeout: Seconds = 15.0
    ssrc_tolerant: bool = True

    @field_validator("rtp_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        m = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", value)
        if not m or not 1 <= int(m[1]) <= int(m[2]) <= 65535:
            raise ValueError(
                f'must be "FIRST-LAST" with 1 <= FIRST <= LAST <= 65535, got {value!r}'
            )
        return f"{int(m[1])}-{int(m[2])}"

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        """First and last RTP port, both inclusive."""
        first, last = self.rtp_ports.split("-")
        return int(first), int(last)


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"must be an IP address or network (CIDR), got {value!r}") from None
    return value


def _ip(value: str) -> str:
    if not _is_ip(value):
        raise ValueError(f"must be an IP address, got {value!r}")
    return value


def _ice_url(value: str) -> str:
    if not re.fullmatch(r"stuns?:[^\s/?#]+", value):
        raise ValueError(f'must be a STUN URL such as "stun:stun.example.org:3478", got {value!r}')
    return value


class WebRtcConfig(_Model):
    """``[webrtc]``: WHEP live view: ICE addresses, STUN, session and transcode limits."""

    host_addresses: tuple[Annotated[str, AfterValidator(_ip)], ...] = ()
    stun_servers: tuple[Annotated[str, AfterValidator(_ice_url)], ...] = ()
    max_sessions: int = Field(default=200, ge=0)
    max_transcodes: int = Field(default=2, ge=0)
    connect_timeout: Seconds = 15.0


class StorageConfig(_Model):
    """``[storage]``: database URL ("" = SQLite in data_dir) and write-behind period (s)."""

    url: str = ""
    flush_interval: Seconds = 1.0

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        if value:
            normalise_storage_url(value)
        return value


class CatalogConfig(_Model):
    """``[catalog]``: when and how device catalogs are queried and assembled."""

    query_on_register: bool = True
    interval: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    fragment_idle: Seconds = 5.0
    max_wait: Seconds = 60.0
    subscribe: bool = True
    subscribe_expires: int = Field(default=3600, ge=60, le=86400)


class KpiPlan(_Model):
    """One planned count: channels a county should have for one camera class."""

    county: str = Field(pattern=r"^[0-9]{6}$")
    class_: CameraClass = Field(alias="class")
    channels: int = Field(ge=0)


class KpiConfig(_Model):
    """``[kpi]``: the availability window and the plan's channel counts."""

    window: Seconds = 86400.0
    target: float = Field(default=0.98, gt=0, le=1)
    plan: tuple[KpiPlan, ...] = ()


class LogConfig(_Model):
    """``[log]``: level and line format (``auto`` = console on a TTY, else JSON)."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class ZoneConfig(_Model):
    """``[[zone]]``: channels matching any criterion get this zone, class and secrecy."""

    name: Label
    civil_code: tuple[CivilCodePrefix, ...] = ()
    devices: tuple[GatewayId, ...] = ()
    channels: tuple[GatewayId, ...] = ()
    types: tuple[TypeCode, ...] = ()
    # Aliased for TOML only, so Python code can still say ZoneConfig(class_=1).
    class_: CameraClass = Field(default=3, validation_alias="class", serialization_alias="class")
    secrecy: bool = False


class TokenConfig(_Model):
    """``[[token]]``: an API consumer (``Authorization: Bearer <secret>``) and what it may see."""

    name: Label
    secret: str = Field(min_length=1)
    zones: tuple[str, ...] = ("default",)
    classes: tuple[CameraClass, ...] = (1, 2, 3)
    secrecy: bool = False
    ptz: bool = True


class UpstreamConfig(_Model):
    """``[[upstream]]``: a platform this node registers to and shares channels with."""

    name: Label
    id: GatewayId
    domain: OptionalDomain = ""
    host: Host
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Transport = "udp"
    password: str = ""
    local_id: OptionalId = ""
    register_expires: int = Field(default=3600, ge=60, le=86400)
    keepalive_interval: Seconds = 60.0
    zones: tuple[str, ...] = ("default",)
    classes: tuple[CameraClass, ...] = (1, 2, 3)
    channels: tuple[GatewayId, ...] = ()
    civil_code: tuple[CivilCodePrefix, ...] = ()
    secrecy: bool = False
    ptz: bool = True
    sources: tuple[Annotated[str, AfterValidator(_network)], ...] = ()

    @property
    def realm(self) -> str:
        """The upstream's SIP domain: ``domain``, or the first 10 digits of its ``id``."""
        return self.domain or self.id[:10]


class GatewayConfig(_Model):
    """The whole validated configuration; build it with ``load_config``."""

    gateway: GatewaySection = Field(default_factory=GatewaySection)
    sip: SipConfig = Field(default_factory=SipConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    kpi: KpiConfig = Field(default_factory=KpiConfig)
    zone: tuple[ZoneConfig, ...] = ()
    token: tuple[TokenConfig, ...] = ()
    upstream: tuple[UpstreamConfig, ...] = ()

    @_model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        problems: list[str] = []
        names = {
            "zone": [z.name for z in self.zone],
            "token": [t.name for t in self.token],
            "upstream": [u.name for u in self.upstream],
        }
        for kind, labels in names.items():
            for i, label in enumerate(labels):
                if label in labels[:i]:
                    problems.append(f"{kind}[{i}].name: duplicate name {label!r}")
        if "default" in names["zone"]:
            i = names["zone"].index("default")
            problems.append(f'zone[{i}].name: "default" is reserved for unmatched channels')
        secrets = [t.secret for t in self.token]
        for i, secret in enumerate(secrets):
            if secret in secrets[:i]:
                problems.append(f"token[{i}].secret: same secret as another token")
        zone_names = {"default", *names["zone"]}
        grants = {
            "token": [t.zones for t in self.token],
            "upstream": [u.zones for u in self.upstream],
        }
        for kind, zone_lists in grants.items():
            for i, zones in enumerate(zone_lists):
                for name in zones:
                    if name not in zone_names:
                        known = ", ".join(sorted(zone_names))
                        problems.append(f"{kind}[{i}].zones: unknown zone {name!r} ({known})")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def storage_url(self) -> str:
        """The SQLAlchemy asyncio URL: ``storage.url`` normalised, or SQLite in ``data_dir``."""
        if self.storage.url:
            return normalise_storage_url(self.storage.url)
        return f"sqlite+aiosqlite:///{(self.gateway.data_path / 'gbgw.db').as_posix()}"

    def upstream_local_id(self, upstream: UpstreamConfig) -> str:
        """The ID presented to ``upstream``: its ``local_id``, or ``gateway.id``."""
        return upstream.local_id or self.gateway.id

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain TOML-able data, every non-empty secret as ``***``."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        for section, key in (("sip", "password"), ("http", "token")):
            if data[section][key]:
                data[section][key] = REDACTED
        for section, key in (("token", "secret"), ("upstream", "password")):
            for item in data[section]:
                if item[key]:
                    item[key] = REDACTED
        if data["storage"]["url"]:
            data["storage"]["url"] = _redact_url(data["storage"]["url"])
        return data

    def to_toml_text(self, redact: bool = True) -> str:
        """Render the effective config as TOML (secrets as ``***`` unless ``redact=False``)."""
        data = self.redacted() if redact else self.model_dump(mode="json", by_alias=True)
        return _render_toml(data)


def to_toml_text(config: GatewayConfig, redact: bool = True) -> str:
    """``config.to_toml_text(redact)``: the effective config as TOML, secrets as ``***``."""
    return config.to_toml_text(redact)


# --- TOML rendering -----------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string once DEL is escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _render_toml(data: Mapping[str, Any]) -> str:
    out: list[str] = []
    for section, value in data.items():
        tables = value if isinstance(value, list) else [value]
        header = f"[[{section}]]" if isinstance(value, list) else f"[{section}]"
        for table in tables:
            out.append(header)
            out += [f"{key} = {_toml_value(v)}" for key, v in table.items()]
            out.append("")
    return "\n".join(out)


# --- loading ------------------------------------------------------------------------------


def _path(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _toml_key(name: str, field: FieldInfo) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else name


def _keys(model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """TOML key -> (TOML key, annotation) for a model's fields."""
    keys = ((_toml_key(n, f), f.annotation) for n, f in model.model_fields.items())
    return {key: (key, annotation) for key, annotation in keys}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a section (``SipConfig``) or array of tables (``tuple[ZoneConfig, ...]``) holds."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args and isinstance(args[0], type):
        return args[0] if issubclass(args[0], BaseModel) else None
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] | None = GatewayConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = _keys(model).get(part)
        model = _model_of(field[1]) if field else None
    return model


def _unknown_key(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    near = difflib.get_close_matches(str(loc[-1]), _keys(model), n=1) if model else []
    return f"unknown key (did you mean {_path((*loc[:-1], near[0]))}?)" if near else "unknown key"


class _EnvProblem(ValueError):
    pass


def _env_value(annotation: Any, raw: str, loc: Loc) -> Any:
    if get_origin(annotation) not in (list, tuple, dict) and _model_of(annotation) is None:
        return raw  # scalars: pydantic coerces "15060" -> 15060, "true" -> True
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _EnvProblem(f"{_path(loc)}: not valid JSON ({exc}), e.g. '[\"udp\"]'") from None


def _key(model: type[BaseModel], key: str, loc: Loc) -> tuple[str, Any]:
    field = _keys(model).get(key)
    if field is None:
        raise _EnvProblem(f"{_path((*loc, key))}: {_unknown_key((*loc, key))}")
    return field


def _apply_env(data: dict[str, Any], name: str, raw: str) -> Loc:
    """Write one ``GBGW_...`` variable into ``data``; returns the key path it set."""
    parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
    section, annotation = _key(GatewayConfig, parts[0], ())
    model = _model_of(annotation)
    assert model is not None  # every top-level key is a section or an array of tables
    if get_origin(annotation) is not tuple:  # a [section]
        if len(parts) != 2:
            raise _EnvProblem(f"expected {ENV_PREFIX}{section.upper()}__<KEY>")
        key, key_type = _key(model, parts[1], (section,))
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise _EnvProblem(f"{section}: the file sets it to a non-table")
        table[key] = _env_value(key_type, raw, (section, key))
        return (section, key)
    if len(parts) == 1:  # an array of tables, replaced whole
        data[section] = _env_value(annotation, raw, (section,))
        return (section,)
    if len(parts) != 3 or not parts[1].isdigit():
        raise _EnvProblem(f"expected {ENV_PREFIX}{section.upper()}='[...]' or __<INDEX>__<KEY>")
    index, items = int(parts[1]), data.get(section, [])
    if not isinstance(items, list) or index >= len(items) or not isinstance(items[index], dict):
        raise _EnvProblem(f"{section}[{index}] is not defined in the file")
    key, key_type = _key(model, parts[2], (section, index))
    items[index][key] = _env_value(key_type, raw, (section, index, key))
    return (section, index, key)


def _pydantic_problems(exc: ValidationError, origins: Mapping[Loc, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        path, msg = _path(loc), str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(loc)
        elif err["type"] == "missing":
            msg = "required key is missing"
        for n in range(len(loc), 0, -1):
            if loc[:n] in origins:
                msg += f" (from {origins[loc[:n]]})"
                break
        # Model-level checks already name their dotted keys, one per line.
        if err["type"] == "value_error" and (not path or msg.startswith(path)):
            problems += [("", line) for line in msg.splitlines()]
        else:
            problems.append((path, msg))
    return problems


def load_config(path: Path | str | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read ``path`` (TOML; None = built-in defaults), apply ``GBGW_`` overrides from ``env``
    (default ``os.environ``), validate; raise ConfigError listing every problem."""
    source = f"config file {path}" if path is not None else "configuration (defaults + env)"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([("", f"cannot read: {exc.strerror or exc}")], source) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([("", f"not valid TOML: {exc}")], source) from None
    problems: list[tuple[str, str]] = []
    origins: dict[Loc, str] = {}
    env = os.environ if env is None else env
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        try:
            origins[_apply_env(data, name, env[name])] = name
        except _EnvProblem as exc:
            problems.append((name, str(exc)))
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + _pydantic_problems(exc, origins), source) from None
    if problems:
        raise ConfigError(problems, source)
    return config
