"""Configuration: typed, frozen, validated once at start-up.

Sources, lowest to highest precedence: a TOML file (``--config FILE``), environment variables
``GREENMON_*`` (nested keys with ``__``, e.g. ``GREENMON_INGEST__BATCH_LINES``), then
command-line flags. Secrets (passwords, tokens) are ``SecretStr``: masked in every repr and
never logged. A bad value fails fast with a `ConfigError` naming the key.

When no broker or database URL is configured, `resolve_local_services` fills them in from the
state file that ``greenmon services up`` writes into the runtime directory.
"""

from __future__ import annotations

import json
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from greenmon.errors import ConfigError

DEFAULT_RUNTIME_DIR = Path(".greenmon/run")
SERVICES_STATE_FILE = "services.json"

_config_file: ContextVar[Path | None] = ContextVar("greenmon_config_file", default=None)


def _check_url(value: str | None, schemes: tuple[str, ...], what: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"{what} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError(f"{what} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{what} has an invalid port") from exc
    if parts.username or parts.password:
        raise ValueError(
            f"{what} must not carry credentials; use the *_username / *_password settings"
        )
    return value.rstrip("/")


class IngestSettings(BaseModel):
    """`[ingest]` in the TOML file; env GREENMON_INGEST__<KEY>."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(default="greenmon-ingest", min_length=1, max_length=64)
    shared_group: str | None = Field(default=None, pattern=r"^[^/+#\s]+$")
    batch_lines: int = Field(default=5000, ge=1, le=100_000)
    batch_age_ms: int = Field(default=200, ge=1)
    max_inflight_writes: int = Field(default=4, ge=1, le=64)
    receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    session_expiry_s: int = Field(default=7 * 86_400, ge=0)
    keepalive_s: int = Field(default=30, ge=5)
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    dead_letter_file: Path | None = None
    dead_letter_max_bytes: int = Field(default=64 << 20, ge=1 << 10)  # then rotated
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    max_readings_per_message: int = Field(default=5000, ge=1)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    metrics_port: int = Field(default=9108, ge=0, le=65_535)
    #: Address /metrics listens on; 0.0.0.0 in a container that Prometheus scrapes.
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    stats_interval_s: float = Field(default=5.0, gt=0)


class AggregateSettings(BaseModel):
    """`[aggregate]` in the TOML file; env GREENMON_AGGREGATE__<KEY>."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Windows written per meter (``meter_energy``); ``energy`` always gets every window, so
    #: per-meter 15-minute points (as many as the readings) are written only when listed.
    meter_windows: tuple[str, ...] = ("1h", "1d", "1mo")
    #: Readings one pass holds in memory: groups of whole enterprises are sized to it.
    chunk_readings: int = Field(default=150_000, ge=1_000)

    @field_validator("meter_windows")
    @classmethod
    def _windows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [w for w in v if w not in ("15m", "1h", "1d", "1mo")]
        if unknown:
            raise ValueError(f"unknown window(s) {', '.join(unknown)}; use 15m, 1h, 1d, 1mo")
        return v


class GrafanaSettings(BaseModel):
    """`[grafana]` in the TOML file; env GREENMON_GRAFANA__<KEY> (for `dashboards push`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v, ("http", "https"), "grafana.url")


# The aggregator recomputes a month from raw readings when late data for one of its days
# arrives (up to its 40-day follow horizon later): raw readings must outlive that.
MIN_RAW_DAYS = 92


class RetentionSettings(BaseModel):
    """`[retention]`: how long InfluxDB keeps what; `greenmon db init` applies it (1.x)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Retention policy of raw `meter_reading`; "" keeps them in the database's default one.
    raw_policy: str = Field(default="raw", pattern=r"^[A-Za-z0-9_-]*$", max_length=64)
    raw_days: int = Field(default=1096, ge=0)  # 0 = forever
    # The database's default policy: the aggregator's windows, alerts, screening, ...
    results_days: int = Field(default=0, ge=0)  # 0 = forever

    @field_validator("raw_days")
    @classmethod
    def _raw_days(cls, v: int) -> int:
        if 0 < v < MIN_RAW_DAYS:
            raise ValueError(
                f"must be 0 (forever) or at least {MIN_RAW_DAYS}: the aggregator recomputes "
                "a whole month from raw readings when late data arrives"
            )
        return v

    @field_validator("results_days")
    @classmethod
    def _results_days(cls, v: int) -> int:
        if 0 < v < 366:
            raise ValueError("must be 0 (forever) or at least 366: results are kept for years")
        return v


class WebhookSettings(BaseModel):
    """One webhook of `[[alerts.webhooks]]`. The URL carries the robot's key: a secret, only
    from the file or the environment, masked when shown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: SecretStr
    format: Literal["generic", "dingtalk", "wecom"] = "generic"
    secret: SecretStr | None = Field(
        default=None, description="DingTalk signing secret (加签), when the robot uses one"
    )
    name: str | None = Field(default=None, min_length=1, max_length=64)
    # DingTalk and WeCom group robots take at most 20 messages a minute.
    max_per_minute: int = Field(default=20, ge=1, le=600)
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v


class AlertsSettings(BaseModel):
    """`[alerts]` in the TOML file; env GREENMON_ALERTS__<KEY> (webhooks as JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: Path | None = Field(default=None, description="alert rules merged over the packaged")
    state_file: Path | None = Field(
        default=None, description="SQLite state; default <runtime_dir>/alerts/<database>.sqlite"
    )
    interval_s: float = Field(default=300.0, gt=0)
    influx: bool = True
    mqtt: bool = True
    mqtt_client_id: str = Field(default="greenmon-alerts", min_length=1, max_length=64)
    webhooks: tuple[WebhookSettings, ...] = ()
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    outbox_max_age_s: float = Field(default=7 * 86_400.0, gt=0)


class Settings(BaseSettings):
    """Every setting greenmon's kernel knows; stage settings live in nested sections."""

    model_config = SettingsConfigDict(
        env_prefix="GREENMON_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    mqtt_url: str | None = Field(
        default=None, description="Broker, mqtt://host:port or mqtts://host:port"
    )
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    mqtt_topic_prefix: str = "greenmon/v1"

    influx_url: str | None = Field(default=None, description="InfluxDB, http(s)://host:port")
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_token: SecretStr | None = None
    influx_gzip: bool | None = Field(
        default=None,
        description="gzip writes to InfluxDB; unset = on, except to a loopback address",
    )
    database: str = Field(default="greenmon", min_length=1)

    registry: Path | None = None
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    timezone: str = "Asia/Shanghai"

    ingest: IngestSettings = IngestSettings()
    retention: RetentionSettings = RetentionSettings()
    aggregate: AggregateSettings = AggregateSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    alerts: AlertsSettings = AlertsSettings()

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        return _check_url(v, ("mqtt", "mqtts"), "mqtt_url")

    @field_validator("influx_url")
    @classmethod
    def _influx_url(cls, v: str | None) -> str | None:
        return _check_url(v, ("http", "https"), "influx_url")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from file < environment < flags; flags set to None are ignored."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        try:
            with config_file.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    overrides = {k: v for k, v in flags.items() if v is not None}
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        origin = (
            f"file {config_file}, GREENMON_* or flags" if config_file else "GREENMON_* or flags"
        )
        raise ConfigError(_format_validation_error(exc, origin)) from exc
    finally:
        _config_file.reset(token)


class ServicesState(BaseModel):
    """What ``greenmon services up`` wrote: where the local broker and database answer."""

    model_config = ConfigDict(frozen=True)

    mqtt_url: str
    influx_url: str
    pids: dict[str, int] = Field(default_factory=dict)
    ports: dict[str, int] = Field(default_factory=dict)


def services_state_path(runtime_dir: Path) -> Path:
    return runtime_dir / SERVICES_STATE_FILE


def read_services_state(runtime_dir: Path) -> ServicesState | None:
    path = services_state_path(runtime_dir)
    if not path.is_file():
        return None
    try:
        return ServicesState.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"local services state {path} is unreadable: {exc}") from exc


def resolve_local_services(settings: Settings, *, need_mqtt: bool, need_influx: bool) -> Settings:
    """Fill in the URLs of the local services when the user gave none."""
    missing_mqtt = need_mqtt and settings.mqtt_url is None
    missing_influx = need_influx and settings.influx_url is None
    if not (missing_mqtt or missing_influx):
        return settings
    state = read_services_state(settings.runtime_dir)
    if state is None:
        wanted = " and ".join(
            flag
            for flag, miss in (("--mqtt-url", missing_mqtt), ("--influx-url", missing_influx))
            if miss
        )
        raise ConfigError(
            f"no {wanted} given and no local services found in {settings.runtime_dir} "
            "(start them with `greenmon services up`, or pass the URL)"
        )
    update: dict[str, Any] = {}
    if missing_mqtt:
        update["mqtt_url"] = state.mqtt_url
    if missing_influx:
        update["influx_url"] = state.influx_url
    return settings.model_copy(update=update)
