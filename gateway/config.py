"""The configuration: pydantic models mirroring the YAML one-to-one, and loading with errors
that name the key path and the line of every problem."""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from drivers.base import DeviceConfig
from gateway.config_loading import (
    FileProblem,
    decode_config,
    line_of,
    load_yaml,
    read_config_bytes,
)
from gateway.errors import ConfigError, ConfigProblem
from gateway.kpi.config import KpiSettings, oee_tag_problems
from gateway.sinks import SinkSettings
from gateway.strict import StrictModel
from gateway.units import Duration, Size

M = TypeVar("M", bound=BaseModel)
MIN_BUFFER_SIZE = 64 * 2**10


def split_listen(listen: str) -> tuple[str, int]:
    """Host and port of a `host:port` (IPv6 in brackets); ValueError in plain words."""
    host, colon, port = listen.rpartition(":")
    if not colon or not host.strip("[]") or " " in listen or not port.isdigit():
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
    if int(port) > 65535:
        raise ValueError("the port must be 0-65535 (0: any free port)")
    return host, int(port)


class BufferConfig(StrictModel):
    path: str = Field("./data/buffer.db", description="SQLite file of the store-and-forward buffer")
    max_size: Size = Field(2**30, gt=0, description="Oldest readings are dropped past this size, "
                           "and counted (e.g. 512MiB, 1GiB)")
    sync: Literal["process", "power"] = Field(
        "process", description="process: survive a gateway crash; power: fsync every batch to "
        "survive a power cut (slower)")

    @field_validator("max_size")
    @classmethod
    def _room_for_readings(cls, size: int) -> int:
        if size < MIN_BUFFER_SIZE:
            raise ValueError("must be at least 64KiB: SQLite's own pages take a few KiB and a "
                             "smaller buffer holds almost no readings (write a unit: 512MiB)")
        return size


class HttpConfig(StrictModel):
    listen: str = Field("127.0.0.1:8080", description="host:port of /healthz, /metrics, /api/tags")
    enabled: bool = True
    token: SecretStr | None = Field(
        None, validate_default=True, description="Bearer token, e.g. ${GATEWAY_HTTP_TOKEN} "
        "(16+ characters); required when listen is not loopback. Guards POST /api/reload, and "
        "on a non-loopback listen every path but /healthz and the page")

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("token")
    @classmethod
    def _token_guards_the_network(cls, token: SecretStr | None,
                                  info: ValidationInfo) -> SecretStr | None:
        from gateway.http_access import is_loopback, parse_listen, token_problem

        if token is not None:
            if problem := token_problem(token.get_secret_value()):
                raise ValueError(problem)
            return token
        listen, enabled = info.data.get("listen"), info.data.get("enabled", True)
        if enabled and listen is not None and not is_loopback(parse_listen(listen)[0]):
            raise ValueError(f"listen {listen} is reachable from the network: set a token "
                             "(token: ${GATEWAY_HTTP_TOKEN}) or listen on 127.0.0.1")
        return token

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        split_listen(listen)
        return listen


class GatewaySettings(KpiSettings):
    id: str = Field(min_length=1, pattern=r"^[^/#+\s]+$",
                    description="Identifies this gateway in topics and tags")
    site: str = Field("", description="ISA-95 site")
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    shutdown_timeout: Duration = Field(
        10.0, description="On SIGTERM, how long the sinks may take to flush")


class MqttSinkConfig(SinkSettings):
    type: Literal["mqtt"] = Field("mqtt", description="mqtt (the default for a sink named mqtt)")
    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    client_id: str | None = Field(None, description="Defaults to shopfloor-<gateway id>")
    username: str | None = None
    password: SecretStr | None = None
    ca: str | None = Field(None, description="CA file for mqtts://")
    cert: str | None = Field(None, description="Client certificate file for mqtts://")
    key: str | None = Field(None, description="Client key file for mqtts://")
    insecure: bool = Field(False, description="mqtts:// without hostname verification")
    qos: Literal[0, 1] = 1
    retain: bool = True
    topic: str = Field("{site}/{area}/{line}/{device}/{tag}",
                       description="Placeholders: {gateway} {site} {area} {line} {device} {tag}")
    payload: Literal["tag", "device"] = Field(
        "tag", description="tag: one message per reading (default); device: one message per "
        "device and poll cycle with all its values, on device_topic (for high rates)")
    device_topic: str = Field("{site}/{area}/{line}/{device}",
                              description="Topic of `payload: device` messages (no {tag})")
    keepalive: Duration = 30.0
    batch_size: int = Field(1000, gt=0, le=60000,
                            description="Readings per batch awaited for PUBACKs together")
    max_rate: float | None = Field(
        None, gt=0, description="Readings per second this sink sends at most, so that a long "
        "backlog replays without flooding the far side; unset: as fast as it acknowledges")
    max_queued_messages: int = Field(
        20000, gt=0, le=65000,
        description="Cap on paho's in-flight queue (paho silently loses QoS 1 past 65,535)")
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1", description="MQTT protocol version: 3.1.1 (default) or 5")
    session_expiry: Duration = Field(
        0.0, ge=0, description="MQTT 5: how long the broker keeps this client's session after "
        "a disconnect (0: it ends with the connection, like 3.1.1's clean session)")
    commands: bool = Field(
        False, description="Accept writes on each writable tag's topic + /set and answer on "
        "/set/result (see docs/commands.md)")

    @field_validator("protocol", mode="before")
    @classmethod
    def _bare_five(cls, protocol: object) -> object:
        return "5" if protocol in (5, 5.0, "5.0") else protocol

    @field_validator("session_expiry")
    @classmethod
    def _session_needs_five(cls, seconds: float, info: ValidationInfo) -> float:
        if seconds and info.data.get("protocol") != "5":
            raise ValueError("session_expiry needs protocol: 5 (3.1.1 has clean sessions)")
        return seconds

    @field_validator("commands")
    @classmethod
    def _commands_need_live_session(cls, commands: bool, info: ValidationInfo) -> bool:
        if commands and info.data.get("session_expiry"):
            raise ValueError("commands: true needs session_expiry: 0 (a kept session would "
                             "queue commands while the gateway is offline and write them late)")
        return commands

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # "Port out of range 0-65535", or not a number
            port = 0
        if not parts.hostname or port == 0:
            raise ValueError("must be mqtt://host:port or mqtts://host:port, port 1-65535")
        return url

    @field_validator("topic")
    @classmethod
    def _topic(cls, template: str) -> str:
        from gateway.sinks.mqtt_wire import validate_topic_template

        return validate_topic_template(template)

    @field_validator("device_topic")
    @classmethod
    def _device_topic(cls, template: str) -> str:
        from gateway.sinks.mqtt_wire import validate_topic_template

        return validate_topic_template(template, per_tag=False)

    @field_validator("username", "client_id", "ca", "cert", "key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        return None if value == "" else value


class InfluxSinkConfig(SinkSettings):
    type: Literal["influxdb"] = Field(
        "influxdb", description="influxdb (the default for a sink named influxdb)")
    url: str = Field("http://127.0.0.1:8086", description="http(s)://host:port")
    api: Literal["v1", "v2"] = Field("v2", description="v2: InfluxDB 2.x/3.x/1.8+ and compatible "
                                     "(token, org, bucket); v1: InfluxDB 1.x (database, ...)")
    token: SecretStr | None = None
    org: str = "factory"
    bucket: str = "telemetry"
    database: str = Field("telemetry", description="v1 only")
    retention_policy: str | None = Field(None, description="v1 only")
    username: str | None = Field(None, description="v1 only")
    password: SecretStr | None = Field(None, description="v1 only")
    create_database: bool = Field(
        False, description="v1 only: create the database at start if it does not exist "
        "(CREATE DATABASE; with auth it needs an admin user)")
    batch_size: int = Field(5000, gt=0, description="Readings per write")
    flush_interval: Duration = Field(1.0, gt=0, description="Longest wait before a partial batch")
    timeout: Duration = Field(10.0, gt=0, description="HTTP timeout of one write")
    max_rate: float | None = Field(
        None, gt=0, description="Readings per second this sink sends at most, so that a long "
        "backlog replays without flooding the far side; unset: as fast as it acknowledges")
    verify_ssl: bool = True

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("token", "password", "username", "retention_policy", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


SinksConfig = dict[str, SinkSettings]
"""Sink name -> its settings, validated by the model of its type (`type`, default: the name)."""
_SINKS_DESCRIPTION = ("Sink name -> its settings; `type` defaults to the name, so `mqtt:` and "
                      "`influxdb:` need none. Any number of sinks of any type, each with its own "
                      "cursor in the buffer")
_SINK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class GatewayConfig(StrictModel):
    """The whole file. `devices` hold each driver's own config model (validated by the driver)."""

    gateway: GatewaySettings
    devices: list[DeviceConfig] = Field(default_factory=list)
    sinks: dict[str, SerializeAsAny[SinkSettings]] = Field(description=_SINKS_DESCRIPTION)

    @model_validator(mode="after")
    def _unique_device_names(self) -> GatewayConfig:
        counts = Counter(device.name for device in self.devices)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate device names: {', '.join(duplicates)}")
        return self


class _RawGatewayConfig(StrictModel):
    """First pass: everything but the devices, which each driver validates itself."""

    gateway: GatewaySettings
    devices: list[dict[str, Any]] = Field(default_factory=list)
    sinks: dict[str, Any]

    @field_validator("sinks")
    @classmethod
    def _at_least_one(cls, sinks: dict[str, Any]) -> dict[str, Any]:
        if not sinks:
            raise ValueError("configure at least one sink (e.g. mqtt or influxdb)")
        return sinks


# ---------------------------------------------------------------------------------------------
# Loading: gateway.config_loading reads the file into plain data with the line of every key;
# here it is validated, every error with key path and line.

Path = tuple[str | int, ...]


def load_config(path: str | os.PathLike[str],
                env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, substitute and validate a config file; raise `ConfigError` listing every problem."""
    return load_config_with_lines(path, env)[0]


def load_config_with_lines(path: str | os.PathLike[str], env: Mapping[str, str] | None = None
                           ) -> tuple[GatewayConfig, Mapping[Path, int]]:
    """`load_config`, and the line of every key path (for problems found after validation)."""
    source = str(path)
    text = decode_config(read_config_bytes(source, source), source)
    return _parse(text, source, os.environ if env is None else env)


def parse_config(text: str, source: str = "<config>",
                 env: Mapping[str, str] | None = None) -> GatewayConfig:
    return _parse(text, source, os.environ if env is None else env)[0]


def _parse(text: str, source: str, env: Mapping[str, str]
           ) -> tuple[GatewayConfig, Mapping[Path, int]]:
    problems: list[ConfigProblem] = []
    data, lines = load_yaml(text, source, env, problems)
    read_problems = len(problems)
    if not isinstance(data, dict):
        raise ConfigError([FileProblem("the file must be a mapping with gateway, devices and "
                                       "sinks", 1)], source)
    raw = _validate(_RawGatewayConfig, data, (), lines, problems)
    devices = _validate_devices(data.get("devices"), lines, problems)
    raw_sinks = data.get("sinks")
    sinks = _validate_sinks(raw_sinks if isinstance(raw_sinks, dict) else {}, lines, problems)
    if raw is not None and not problems:
        try:
            return GatewayConfig(gateway=raw.gateway, devices=devices, sinks=sinks), lines
        except ValidationError as exc:
            problems += _problems_from(exc, (), lines, GatewayConfig)
    problems = _without_consequences(problems, read_problems)
    problems.sort(key=lambda problem: problem.line or 0)
    raise ConfigError(problems, source)


def _without_consequences(problems: list[ConfigProblem], read: int) -> list[ConfigProblem]:
    """Drop a validation problem at a key whose reading already failed (an unset `${VAR}`
    reads as empty, so `token` would also be called missing): it would mislead."""
    failed = {problem.path for problem in problems[:read] if problem.path}
    return problems[:read] + [p for p in problems[read:] if p.path not in failed]


def _validate_devices(raw_devices: Any, lines: Mapping[Path, int],
                      problems: list[ConfigProblem]) -> list[DeviceConfig]:
    devices: list[DeviceConfig] = []
    placed: list[tuple[int, DeviceConfig]] = []
    if not isinstance(raw_devices, list):
        return devices  # the first pass reported it
    first_index: dict[Any, int] = {}
    for index, raw in enumerate(raw_devices):
        if not isinstance(raw, dict):
            continue  # the first pass reported it
        device = _validate_device(raw, ("devices", index), lines, problems)
        if device is not None:
            devices.append(device)
            placed.append((index, device))
            problems += _oee_problems(device, ("devices", index), lines)
        name = raw.get("name")
        if isinstance(name, str) and first_index.setdefault(name, index) != index:
            problems.append(_problem(("devices", index, "name"),
                                     f"duplicate device name {name!r}", lines))
    problems += _shared_link_problems(placed, lines)
    return devices


def _shared_link_problems(devices: list[tuple[int, DeviceConfig]],
                          lines: Mapping[Path, int]) -> list[ConfigProblem]:
    """Devices on one serial port (or one host:port) share one link, whose settings they must
    agree on (a driver's config says which through `shared_link()`)."""
    first: dict[object, tuple[str, dict[str, object]]] = {}
    problems: list[ConfigProblem] = []
    for index, device in devices:
        shared = getattr(device, "shared_link", None)
        if shared is None or not device.enabled:
            continue
        key, settings = shared()
        name, agreed = first.setdefault((device.driver, key), (device.name, settings))
        for setting, value in settings.items():
            if name != device.name and agreed.get(setting) != value:
                problems.append(_problem(
                    ("devices", index, "connection", setting),
                    f"{setting} {value} differs from {agreed.get(setting)} of device {name} on "
                    f"the same link ({' '.join(key[1:])}): devices on one link must agree",
                    lines))
    return problems


def _oee_problems(device: DeviceConfig, where: Path,
                  lines: Mapping[Path, int]) -> list[ConfigProblem]:
    """The tags an `oee:` block names must exist and have fitting types."""
    types = device.tag_types()
    if device.oee is None or not types:
        return []
    return [_problem((*where, "oee", *(key.split(".") if key else ())), message, lines)
            for key, message in oee_tag_problems(device.oee, types)]


def _validate_sinks(raw_sinks: dict[str, Any], lines: Mapping[Path, int],
                    problems: list[ConfigProblem]) -> dict[str, SinkSettings]:
    """Each sink by the settings model of its type (`type`, or the sink's name)."""
    from gateway.sinks.registry import SinkNotFound, load_sink

    sinks: dict[str, SinkSettings] = {}
    for name, raw in raw_sinks.items():
        where: Path = ("sinks", name)
        if not isinstance(name, str) or not _SINK_NAME.match(name):
            problems.append(_problem(where, "a sink name is letters, digits, '_', '-' or '.'",
                                     lines))
            continue
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            problems.append(_problem(where, "must be a mapping of the sink's settings", lines))
            continue
        type_name = raw.get("type", name)
        try:
            sink = load_sink(str(type_name))
        except SinkNotFound as exc:
            problems.append(_problem((*where, "type") if "type" in raw else where, str(exc),
                                     lines))
            continue
        settings = _validate(sink.settings_model, {**raw, "type": type_name}, where, lines,
                             problems)
        if settings is not None:
            sinks[name] = settings
    return sinks


def _validate_device(raw: dict[str, Any], where: Path, lines: Mapping[Path, int],
                     problems: list[ConfigProblem]) -> DeviceConfig | None:
    from drivers.registry import DriverNotFound, available_drivers, load_driver

    name = raw.get("driver")
    if not isinstance(name, str):
        installed = ", ".join(available_drivers()) or "none"
        message = ("required key is missing" if name is None else "must be a driver's name")
        problems.append(_problem((*where, "driver"), f"{message} (installed: {installed})",
                                 lines))
        return None
    try:
        driver = load_driver(name)
    except DriverNotFound as exc:
        problems.append(_problem((*where, "driver"), str(exc), lines))
        return None
    return _validate(driver.config_model, raw, where, lines, problems)


def _validate(model: type[M], data: Any, where: Path, lines: Mapping[Path, int],
              problems: list[ConfigProblem]) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(exc, where, lines, model)
        return None


def _problems_from(exc: ValidationError, where: Path, lines: Mapping[Path, int],
                   model: type[BaseModel]) -> list[ConfigProblem]:
    problems = []
    # include_input=False: an error message never repeats the value (it may be a password).
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(part for part in error["loc"] if not _is_union_branch(part))
        problems.append(_problem((*where, *loc), _message(error, model, loc), lines))
    return problems


def _is_union_branch(part: str | int) -> bool:
    # pydantic adds the tried type ("int", "function-after[...]") to loc inside unions.
    return isinstance(part, str) and (part in {"int", "float", "str", "bool", "none"}
                                      or "[" in part)


def _message(error: Any, model: type[BaseModel], loc: Path) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key" + did_you_mean(loc[-1], keys_at(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def did_you_mean(key: object, known: list[str]) -> str:
    """` (did you mean 'max_size'?)`, or the keys allowed there when there are few."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if 0 < len(known) <= 12:
        return f" (expected one of: {', '.join(known)})"
    return ""


def keys_at(model: type[BaseModel], loc: Path) -> list[str]:
    """The keys the config allows at `loc` inside `model` (following lists and unions)."""
    types: list[Any] = [model]
    for part in loc:
        found: list[Any] = []
        for candidate in _alternatives(types):
            if isinstance(part, int) and get_origin(candidate) in (list, tuple):
                found += get_args(candidate)[:1]
            elif (isinstance(part, str) and isinstance(candidate, type)
                  and issubclass(candidate, BaseModel) and part in candidate.model_fields):
                found.append(candidate.model_fields[part].annotation)
        types = found
    keys = {name for candidate in _alternatives(types) if isinstance(candidate, type)
            and issubclass(candidate, BaseModel) for name in candidate.model_fields}
    return sorted(keys)


def _alternatives(types: list[Any]) -> list[Any]:
    """Every member of the unions and Optionals in `types`, Annotated unwrapped."""
    flat: list[Any] = []
    for annotation in types:
        origin = get_origin(annotation)
        if origin is Annotated:
            flat += _alternatives([get_args(annotation)[0]])
        elif origin in (Union, UnionType):
            flat += _alternatives(list(get_args(annotation)))
        else:
            flat.append(annotation)
    return flat


def _problem(loc: Path, message: str, lines: Mapping[Path, int]) -> ConfigProblem:
    return ConfigProblem(_dotted(loc), message, line_of(loc, lines))


def _dotted(loc: Path) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def config_json_schema(builtin_only: bool = False) -> dict[str, Any]:
    """JSON Schema of the file, with each installed driver's device model (for editors)."""
    from drivers.registry import DriverNotFound, available_drivers, builtin_drivers, load_driver
    from gateway.sinks.registry import available_sinks, builtin_sinks, load_sink

    models = []
    for name in builtin_drivers() if builtin_only else available_drivers():
        try:
            models.append(load_driver(name).config_model)
        except DriverNotFound as exc:  # a broken plugin must not hide the others' schema
            logging.getLogger(__name__).warning("%s", exc)
    device_type: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    sink_models = [load_sink(name).settings_model
                   for name in (builtin_sinks() if builtin_only else available_sinks())]
    sink_type: Any = (sink_models[0] if len(sink_models) == 1
                      else Union[tuple(sink_models)])  # noqa: UP007
    schema_model = create_model(
        "GatewayConfig", __base__=StrictModel,
        gateway=(GatewaySettings, ...),
        devices=(list[device_type], Field(default_factory=list)),
        sinks=(dict[str, sink_type], Field(description=_SINKS_DESCRIPTION)),
    )
    return schema_model.model_json_schema()


def config_secrets(model: BaseModel) -> list[str]:
    """Every secret value in a validated config (for log redaction)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return [secret for secret in found if secret]
