"""Configuration: precedence file < env < flag, fail-fast errors naming the key, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenmon.config import Settings, load_settings, resolve_local_services
from greenmon.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("GREENMON_"):
            monkeypatch.delenv(key)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "greenmon.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s.database == "greenmon"
    assert s.mqtt_url is None
    assert s.timezone == "Asia/Shanghai"
    assert s.runtime_dir == Path(".greenmon/run")


@pytest.mark.parametrize(
    ("file_db", "env_db", "flag_db", "expected"),
    [
        ("from_file", None, None, "from_file"),
        ("from_file", "from_env", None, "from_env"),
        ("from_file", "from_env", "from_flag", "from_flag"),
        (None, "from_env", "from_flag", "from_flag"),
        (None, None, None, "greenmon"),
    ],
)
def test_precedence_file_env_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_db: str | None,
    env_db: str | None,
    flag_db: str | None,
    expected: str,
) -> None:
    cfg = _toml(tmp_path, f'database = "{file_db}"\n' if file_db else "")
    if env_db:
        monkeypatch.setenv("GREENMON_DATABASE", env_db)
    s = load_settings(cfg, database=flag_db)
    assert s.database == expected


def test_precedence_applies_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(
        tmp_path,
        'mqtt_url = "mqtt://file:1883"\ninflux_url = "http://file:8086"\ndatabase = "filedb"\n',
    )
    monkeypatch.setenv("GREENMON_INFLUX_URL", "http://env:8086")
    s = load_settings(cfg, mqtt_url="mqtts://flag:8883")
    assert (s.mqtt_url, s.influx_url, s.database) == (
        "mqtts://flag:8883",
        "http://env:8086",
        "filedb",
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('mqtt_url = "http://x:1"', "mqtt_url"),
        ('influx_url = "ftp://x"', "influx_url"),
        ('influx_url = "http://x:notaport"', "influx_url"),
        ('database = ""', "database"),
        ('timezone = "Mars/Olympus"', "timezone"),
        ("no_such_key = 1", "no_such_key"),
        ('mqtt_url = "mqtt://user:secret@host:1883"', "mqtt_url"),
        ('[aggregate]\nmeter_windows = ["15m", "2h"]', "aggregate.meter_windows"),
        ("[aggregate]\nchunk_readings = 10", "aggregate.chunk_readings"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, toml + "\n"))
    assert f"{key}:" in str(info.value)
    assert "secret" not in str(info.value)


def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENMON_INFLUX_URL", "nonsense")
    with pytest.raises(ConfigError, match="influx_url"):
        load_settings()


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_toml(tmp_path, "database = \n"))


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.database = "other"  # type: ignore[misc]


def test_secrets_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENMON_INFLUX_TOKEN", "tok-3141592653")
    cfg = _toml(tmp_path, 'mqtt_password = "pw-2718281828"\ninflux_password = "pw-1414"\n')
    s = load_settings(cfg)
    assert s.influx_token is not None and s.influx_token.get_secret_value() == "tok-3141592653"
    assert s.mqtt_password is not None and s.mqtt_password.get_secret_value() == "pw-2718281828"
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(), default=str)):
        for secret in ("tok-3141592653", "pw-2718281828", "pw-1414"):
            assert secret not in text


def test_resolve_local_services(tmp_path: Path) -> None:
    s = load_settings(runtime_dir=tmp_path)
    with pytest.raises(ConfigError, match="greenmon services up"):
        resolve_local_services(s, need_mqtt=True, need_influx=True)
    (tmp_path / "services.json").write_text(
        json.dumps({"mqtt_url": "mqtt://127.0.0.1:1", "influx_url": "http://127.0.0.1:2"})
    )
    r = resolve_local_services(s, need_mqtt=True, need_influx=True)
    assert (r.mqtt_url, r.influx_url) == ("mqtt://127.0.0.1:1", "http://127.0.0.1:2")
    # An explicit URL is never replaced by the discovered one.
    explicit = load_settings(runtime_dir=tmp_path, influx_url="http://db:8086")
    r2 = resolve_local_services(explicit, need_mqtt=False, need_influx=True)
    assert r2.influx_url == "http://db:8086"
    assert isinstance(r2, Settings)
