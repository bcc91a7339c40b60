"""gateway.config: defaults, unknown keys, environment overrides, IDs, redaction, example file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import (
    ConfigError,
    GatewayConfig,
    ZoneConfig,
    load_config,
    normalise_storage_url,
    to_toml_text,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "gateway.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return str(info.value)


# --- defaults -----------------------------------------------------------------------------


def test_defaults_are_valid_and_match_the_contract() -> None:
    config = load_config(None, {})
    assert config == GatewayConfig()
    assert config.gateway.id == "62090000002000000001"
    assert config.gateway.domain == "6209000000"
    assert config.gateway.name == "gbgw"
    assert config.gateway.data_dir == "./gbgw-data"
    sip = config.sip
    assert (sip.listen, sip.port, sip.transports) == ("0.0.0.0", 5060, ("udp", "tcp"))
    assert (sip.password, sip.advertise) == ("12345678", "")
    assert (sip.register_expires, sip.register_min_expires, sip.register_max_expires) == (
        3600,
        60,
        86400,
    )
    assert (sip.keepalive_interval, sip.keepalive_max_missed) == (60, 3)
    assert (sip.auth_max_failures, sip.auth_lockout) == (5, 60)
    assert (sip.tcp_idle_timeout, sip.max_message_size) == (600, 65536)
    assert (config.http.listen, config.http.port, config.http.token) == ("127.0.0.1", 8080, "")
    assert config.media.rtp_ports == "30000-30999"
    assert config.media.rtp_port_range == (30000, 30999)
    assert (config.media.listen, config.media.advertise, config.media.idle_close) == (
        "0.0.0.0",
        "",
        10,
    )
    assert (config.storage.url, config.storage.flush_interval) == ("", 1.0)
    assert (config.log.level, config.log.format) == ("info", "auto")
    assert (config.zone, config.token, config.upstream) == ((), (), ())


def test_array_table_defaults() -> None:
    config = load_config(
        None,
        {
            "GBGW_ZONE": '[{"name": "police", "civil_code": ["620902"]}]',
            "GBGW_TOKEN": '[{"name": "ops", "secret": "s"}]',
            "GBGW_UPSTREAM": '[{"name": "city", "id": "62090000002000000002", "host": "10.1.1.1"}]',
        },
    )
    zone, token, upstream = config.zone[0], config.token[0], config.upstream[0]
    assert (zone.class_, zone.secrecy, zone.devices, zone.types) == (3, False, (), ())
    assert (token.zones, token.classes, token.secrecy, token.ptz) == (
        ("default",),
        (1, 2, 3),
        False,
        True,
    )
    assert (upstream.port, upstream.transport, upstream.register_expires) == (5060, "udp", 3600)
    assert (upstream.zones, upstream.classes, upstream.keepalive_interval) == (
        ("default",),
        (1, 2, 3),
        60,
    )
    assert upstream.realm == "6209000000"
    assert config.upstream_local_id(upstream) == config.gateway.id
    assert ZoneConfig(name="z", class_=1).class_ == 1  # code may use the field name


# --- unknown keys -------------------------------------------------------------------------


def test_unknown_key_in_a_table_is_named(tmp_path: Path) -> None:
    text = problems(write(tmp_path, "[sip]\nprot = 5060\n"))
    assert "sip.prot" in text
    assert "did you mean sip.port?" in text


def test_unknown_key_in_an_array_table_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[[zone]]\nname = "a"\n\n[[zone]]\nname = "b"\ncolour = "red"\n')
    assert "zone[1].colour: unknown key" in problems(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    assert "sipp: unknown key (did you mean sip?)" in problems(write(tmp_path, "[sipp]\n"))


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[sip]\nport = 70000\ntransports = ["sctp"]\n[media]\nrtp_ports = "9-1"\n'
        '[log]\nlevel = "loud"\n',
    )
    text = problems(path)
    for key in ("sip.port", "sip.transports[0]", "media.rtp_ports", "log.level"):
        assert f"  {key}: " in text
    assert text.startswith(f"invalid config file {path}:\n")


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    assert "cannot read" in problems(tmp_path / "missing.toml")
    assert "not valid TOML" in problems(write(tmp_path, "[sip\n"))


# --- environment --------------------------------------------------------------------------


def test_env_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\nport = 5070\ntransports = ["tcp"]\n[http]\ntoken = "file"\n')
    config = load_config(
        path,
        {
            "GBGW_SIP__PORT": "15060",
            "GBGW_SIP__TRANSPORTS": '["udp"]',
            "GBGW_HTTP__TOKEN": "x",
            "GBGW_SIP__KEEPALIVE_INTERVAL": "0.5",
            "gbgw_log__level": "DEBUG",  # names are case-insensitive, like pydantic-settings
            "PATH": "/usr/bin",  # not ours: ignored
        },
    )
    assert config.sip.port == 15060
    assert config.sip.transports == ("udp",)
    assert config.http.token == "x"
    assert config.sip.keepalive_interval == 0.5
    assert config.log.level == "debug"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GBGW_SIP__PORT", "0")
    assert load_config(None).sip.port == 0


def test_env_edits_and_replaces_array_tables(tmp_path: Path) -> None:
    path = write(tmp_path, '[[token]]\nname = "ops"\nsecret = "from-file"\n')
    config = load_config(path, {"GBGW_TOKEN__0__SECRET": "from-env", "GBGW_TOKEN__0__PTZ": "false"})
    assert (config.token[0].secret, config.token[0].ptz) == ("from-env", False)
    config = load_config(path, {"GBGW_TOKEN": '[{"name": "a", "secret": "1"}]'})
    assert [t.name for t in config.token] == ["a"]
    assert "GBGW_TOKEN__1__SECRET: token[1] is not defined in the file" in problems(
        path, {"GBGW_TOKEN__1__SECRET": "x"}
    )


def test_env_naming_no_key_is_an_error() -> None:
    text = problems(None, {"GBGW_SIP__PROT": "1", "GBGW_NOPE": "1", "GBGW_SIP": "1"})
    assert "GBGW_SIP__PROT: sip.prot: unknown key (did you mean sip.port?)" in text
    assert "GBGW_NOPE: nope: unknown key" in text
    assert "GBGW_SIP: expected GBGW_SIP__<KEY>" in text


def test_env_bad_values_name_the_variable() -> None:
    text = problems(None, {"GBGW_SIP__PORT": "abc", "GBGW_SIP__TRANSPORTS": "udp"})
    assert re.search(r"sip\.port: .*integer.* \(from GBGW_SIP__PORT\)", text)
    assert "GBGW_SIP__TRANSPORTS: sip.transports: not valid JSON" in text


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('id = "6209000000200000001"', "gateway.id: an ID must be 20 digits"),
        ('id = "6209000000200000000a"', "gateway.id: an ID must be 20 digits"),
        ('id = "62090000001320000001"\ndomain = "6209000000"', "type code) must be 200"),
        ('domain = "620900000"', "gateway.domain: a domain must be 10 digits"),
        ('domain = "6209000001"', "must equal the first 10 digits of gateway.id"),
        ("id = 62090000002000000001", "gateway.id: Input should be a valid string"),
    ],
)
def test_bad_ids(tmp_path: Path, table: str, message: str) -> None:
    assert message in problems(write(tmp_path, f"[gateway]\n{table}\n"))


def test_another_valid_identity(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nid = "34020000002000000001"\ndomain = "3402000000"\n')
    assert load_config(path, {}).gateway.domain == "3402000000"


def test_non_loopback_http_needs_a_token() -> None:
    text = problems(None, {"GBGW_HTTP__LISTEN": "0.0.0.0"})
    assert "http.token is required when http.listen is not loopback" in text
    assert load_config(None, {"GBGW_HTTP__LISTEN": "0.0.0.0", "GBGW_HTTP__TOKEN": "t"})
    for loopback in ("127.0.0.2", "::1", "localhost"):
        assert load_config(None, {"GBGW_HTTP__LISTEN": loopback}).http.listen == loopback


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("GBGW_SIP__PORT", "0", True),
        ("GBGW_SIP__PORT", "65535", True),
        ("GBGW_SIP__PORT", "65536", False),
        ("GBGW_HTTP__PORT", "-1", False),
        ("GBGW_SIP__TRANSPORTS", "[]", False),
        ("GBGW_SIP__TRANSPORTS", '["tcp", "udp", "tcp"]', True),
        ("GBGW_SIP__TRANSPORTS", '["tls"]', False),
        ("GBGW_SIP__LISTEN", "not a host", False),
        ("GBGW_SIP__ADVERTISE", "gw.example.org", True),
        ("GBGW_MEDIA__RTP_PORTS", "30000-30000", True),
        ("GBGW_MEDIA__RTP_PORTS", "30000", False),
        ("GBGW_MEDIA__RTP_PORTS", "0-10", False),
        ("GBGW_MEDIA__RTP_PORTS", "40000-30000", False),
        ("GBGW_MEDIA__RTP_PORTS", "60000-70000", False),
        ("GBGW_SIP__REGISTER_EXPIRES", "30", False),  # below register_min_expires
        ("GBGW_STORAGE__FLUSH_INTERVAL", "0", False),
        ("GBGW_LOG__FORMAT", "json", True),
        ("GBGW_LOG__FORMAT", "xml", False),
    ],
)
def test_value_checks(key: str, value: str, ok: bool) -> None:
    if ok:
        load_config(None, {key: value})
    else:
        with pytest.raises(ConfigError, match=f"from {key}|{key.split('__')[0][5:].lower()}"):
            load_config(None, {key: value})


def test_transports_are_deduplicated() -> None:
    config = load_config(None, {"GBGW_SIP__TRANSPORTS": '["tcp", "udp", "tcp"]'})
    assert config.sip.transports == ("tcp", "udp")


def test_cross_references(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[zone]]\nname = "default"\n[[zone]]\nname = "a"\n[[zone]]\nname = "a"\n'
        '[[token]]\nname = "t"\nsecret = "s"\nzones = ["b"]\n'
        '[[token]]\nname = "u"\nsecret = "s"\n'
        '[[upstream]]\nname = "c"\nid = "62090000002000000002"\nhost = "h"\nzones = ["x"]\n',
    )
    text = problems(path)
    assert 'zone[0].name: "default" is reserved' in text
    assert "zone[2].name: duplicate name 'a'" in text
    assert "token[0].zones: unknown zone 'b'" in text
    assert "token[1].secret: same secret as another token" in text
    assert "upstream[0].zones: unknown zone 'x'" in text


def test_zone_criteria_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[zone]]\nname = "z"\ncivil_code = ["62a"]\ndevices = ["1"]\ntypes = ["13"]\nclass = 4\n',
    )
    text = problems(path)
    for key in ("zone[0].civil_code[0]", "zone[0].devices[0]", "zone[0].types[0]", "zone[0].class"):
        assert f"  {key}: " in text


# --- storage URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/gbgw.db", "sqlite+aiosqlite:///var/gbgw.db"),
        ("sqlite:////abs/gbgw.db", "sqlite+aiosqlite:////abs/gbgw.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/gbgw", "postgresql+asyncpg://u:p@db:5432/gbgw"),
        ("postgres://u:p@db/gbgw", "postgresql+asyncpg://u:p@db/gbgw"),
        ("postgresql+asyncpg://db/gbgw", "postgresql+asyncpg://db/gbgw"),
    ],
)
def test_storage_url_normalisation(url: str, expected: str) -> None:
    assert normalise_storage_url(url) == expected
    assert load_config(None, {"GBGW_STORAGE__URL": url}).storage_url() == expected


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql+psycopg2://h/d", "sqlite://", "x"])
def test_unsupported_storage_urls(url: str) -> None:
    assert "storage.url" in problems(None, {"GBGW_STORAGE__URL": url})


def test_default_storage_url_is_sqlite_in_data_dir() -> None:
    assert GatewayConfig().storage_url() == "sqlite+aiosqlite:///gbgw-data/gbgw.db"
    config = load_config(None, {"GBGW_GATEWAY__DATA_DIR": "/var/lib/gbgw"})
    assert config.storage_url() == "sqlite+aiosqlite:////var/lib/gbgw/gbgw.db"


# --- rendering ----------------------------------------------------------------------------

SECRETS = {
    "GBGW_SIP__PASSWORD": "sip-pass-1",
    "GBGW_HTTP__TOKEN": "http-token-2",
    "GBGW_STORAGE__URL": "postgresql://gbgw:db-pass-3@db/gbgw?sslpassword=ssl-pass-4",
    "GBGW_TOKEN": '[{"name": "ops", "secret": "token-secret-5"}]',
    "GBGW_UPSTREAM": '[{"name": "city", "id": "62090000002000000002", "host": "h",'
    ' "password": "upstream-pass-6"}]',
}
SECRET_VALUES = ("sip-pass-1", "http-token-2", "db-pass-3", "ssl-pass-4", "token-secret-5")


def test_redaction_hides_every_secret() -> None:
    config = load_config(None, SECRETS)
    text = to_toml_text(config, redact=True)
    for secret in (*SECRET_VALUES, "upstream-pass-6"):
        assert secret not in text
        assert secret not in repr(config.redacted())
    assert text.count('"***"') == 4  # sip.password, http.token, token.secret, upstream.password
    assert "postgresql://gbgw:***@db/gbgw" in text
    assert config.to_toml_text() == text


def test_rendering_round_trips() -> None:
    config = load_config(None, SECRETS)
    text = config.to_toml_text(redact=False)
    assert "upstream-pass-6" in text
    assert GatewayConfig.model_validate(tomllib.loads(text)) == config
    weird = load_config(None, {"GBGW_SIP__PASSWORD": 'q"\\\n\t\x7f\x01中'})
    assert GatewayConfig.model_validate(tomllib.loads(weird.to_toml_text(False))) == weird


# --- the example file ---------------------------------------------------------------------


def test_example_file_validates() -> None:
    assert load_config(EXAMPLE, {}) == GatewayConfig()


def _uncommented_example() -> str:
    # Commented-out TOML in the example starts with '#' and no space; prose starts '# ' or '##'.
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line[1:] if re.match(r"#(?![#\s])", line) else line for line in lines)


def test_example_commented_tables_validate() -> None:
    config = GatewayConfig.model_validate(tomllib.loads(_uncommented_example()))
    assert [len(config.zone), len(config.token), len(config.upstream)] == [1, 1, 1]


def test_example_documents_every_key() -> None:
    documented: set[str] = set()
    section, previous = "", ""
    for line in _uncommented_example().splitlines():
        if header := re.fullmatch(r"\[\[?(\w+)\]\]?", line):
            section = header[1]
        elif key := re.match(r"(\w+) = ", line):
            assert re.match("#+ ", previous), f"{section}.{key[1]} has no comment above it"
            documented.add(f"{section}.{key[1]}")
        previous = line
    expected = set()
    for section, field in GatewayConfig.model_fields.items():
        model = getattr(field.annotation, "__args__", (field.annotation,))[0]
        assert isinstance(model, type) and issubclass(model, BaseModel)
        expected |= {
            f"{section}.{f.serialization_alias or name}" for name, f in model.model_fields.items()
        }
    assert documented == expected
