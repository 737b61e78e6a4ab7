"""MQTT topics and payloads (pure): the topic template of the config and the JSON payload.

Topic levels are sanitized rather than rejected, because a name the broker refuses is worse than
a changed character: mosquitto 2.0 answers a PUBLISH whose topic holds a control character
(C0, DEL, C1) or a Unicode noncharacter by dropping the connection, and paho re-sends the
queued message after every reconnect, so one bad name would stall the sink forever (measured).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from functools import lru_cache

import orjson

from gateway.models import Quality, Reading, iso_z

PLACEHOLDERS = frozenset({"gateway", "site", "area", "line", "device", "tag"})
# What MQTT (and mosquitto's UTF-8 check) refuses inside a topic, plus the level separator and
# the wildcards: NUL and controls, DEL and C1 controls, surrogates (not encodable as UTF-8),
# and the noncharacters U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF of every plane.
_ILLEGAL = re.compile(r"[/+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                      + "".join(rf"\U{plane:04x}fffe\U{plane:04x}ffff" for plane in range(17))
                      + "]")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_GOOD = Quality.GOOD  # a global: an Enum member looked up through its class costs 13x
_JSON_ASCII = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def validate_topic_template(template: str, per_tag: bool = True) -> str:
    """The template itself, or ValueError naming an unknown placeholder or a wildcard."""
    try:
        fields = [(name, conversion, spec)
                  for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(f"invalid topic template: {exc}") from None
    unknown = sorted({name for name, _, _ in fields} - PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use "
                         + " ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))
    for name, conversion, spec in fields:
        if conversion or spec:
            raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
    if per_tag and "{tag}" not in template:
        raise ValueError("the topic template needs {tag} (one topic per tag)")
    if not per_tag and "{tag}" in template:
        raise ValueError("a device topic has no {tag}: all tags go in one message")
    if "+" in template or "#" in template:
        raise ValueError("a topic cannot contain the wildcards + or #")
    literal = "".join(text for text, *_ in string.Formatter().parse(template))
    if _ILLEGAL.search(literal.replace("/", "")):
        raise ValueError("a topic cannot contain control characters")
    if template.startswith("$"):
        raise ValueError("topics starting with $ are reserved for the broker ($SYS)")
    return template


def level(value: str) -> str:
    """One topic level: characters MQTT reserves or refuses (and `/` inside a name) become
    `_`."""
    return _ILLEGAL.sub("_", value)


def render_topic(template: str, values: Mapping[str, str]) -> str:
    """The template with every placeholder filled; empty levels (an unset area, say) are left
    out rather than producing `site//line`, and so is a leading or trailing `/`. A leading `$`
    (a site named `$x`) becomes `_`: subscribers to `#` never see `$` topics."""
    topic = template.format_map({k: level(v) for k, v in values.items()})
    topic = "/".join(part for part in topic.split("/") if part)
    if topic.startswith("$"):
        topic = "_" + topic[1:]
    return topic or "_"


def status_topic(site: str, gateway: str) -> str:
    return render_topic("{site}/_gateway/{gateway}/status", {"site": site, "gateway": gateway})


def format_ts(reading: Reading) -> str:
    """`2026-11-24T01:02:03.123456Z`: always microseconds (source_ts is UTC, see Reading)."""
    return iso_z(reading.source_ts)


def _dump(payload: dict[str, object], orjson_exact: bool = True) -> bytes:
    """The compact JSON of `payload`, byte for byte what the stdlib encoder writes.

    orjson makes the device payload of a 250-tag cycle 1.5x as fast, loop included
    (bench/json_encoding.py), and writes the same bytes except for a float below 1e-4
    (`1e-05`, orjson `0.00001`): the caller says whether the payload may hold one
    (`orjson_exact=False`: the stdlib encoder). orjson refuses an int beyond 64 bits and a
    lone surrogate; those fall back too."""
    if orjson_exact:
        try:
            return orjson.dumps(payload)
        except TypeError:  # orjson.JSONEncodeError
            pass
    try:
        return _JSON.encode(payload).encode()
    except UnicodeEncodeError:  # a lone surrogate (a PLC string decoded with surrogateescape)
        return _JSON_ASCII.encode(payload).encode()


def _not_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _orjson_exact(value: object) -> bool:
    """Whether orjson writes `value` as the stdlib encoder does: not a float (or array of
    them) between 0 and 1e-4 in magnitude, where Python writes `1e-05` and orjson `0.00001`."""
    if isinstance(value, float):
        return not (0.0 < abs(value) < 1e-4)
    if isinstance(value, (tuple, list)):
        return all(_orjson_exact(v) for v in value)
    return True


def _json_value(reading: Reading) -> tuple[object, Quality, str | None]:
    """The value, quality and error to send: see encode_payload for NaN and arrays."""
    value, quality, error = reading.value, reading.quality, reading.error
    if _not_finite(value):
        return None, Quality.BAD, error or f"not a number ({value})"
    if isinstance(value, tuple):
        return [None if _not_finite(v) else v for v in value], quality, error
    return value, quality, error


def encode_payload(reading: Reading, enum: Mapping[int, str] | None = None) -> bytes:
    """`{"value": 21.5, "quality": "good", "ts": "...Z", "unit": "degC"}`; `unit` only when
    set, `error` only on a reading that has one, `text` when the tag is an enumeration (`enum`)
    that names the value. An array is a JSON list. JSON has no NaN or infinity: such a value is
    sent as null with quality bad (inside an array: that element is null)."""
    value = reading.value
    kind = type(value)
    if enum is not None and kind is int and value in enum:
        return _encode_payload(reading, enum[value])  # type: ignore[index]
    if reading.error is None and (kind is int or kind is bool
                                  or (kind is float and math.isfinite(value))):  # type: ignore
        # The common case built by hand: the same bytes as the encoder below, 4x faster.
        text = ("true" if value else "false") if kind is bool else repr(value)
        unit = "" if reading.unit is None else f',"unit":{_json_string(reading.unit)}'
        payload = (f'{{"value":{text},"quality":"{reading.quality.value}",'
                   f'"ts":"{format_ts(reading)}"{unit}}}')
        try:
            return payload.encode()
        except UnicodeEncodeError:  # a lone surrogate in the unit: the encoder's fallback
            pass
    return _encode_payload(reading)


@lru_cache(maxsize=1024)
def _json_string(text: str) -> str:
    return _JSON.encode(text)


def _encode_payload(reading: Reading, text: str | None = None) -> bytes:
    value, quality, error = _json_value(reading)
    payload: dict[str, object] = {"value": value, "quality": quality.value,
                                  "ts": format_ts(reading)}
    if text is not None:
        payload["text"] = text
    if reading.unit is not None:
        payload["unit"] = reading.unit
    if error is not None:
        payload["error"] = error
    return _dump(payload, _orjson_exact(value))


def device_cycles(readings: Sequence[Reading]) -> list[list[Reading]]:
    """Readings grouped per device and poll cycle, in order: a device's group closes when one
    of its tags comes again (the next cycle)."""
    groups: list[list[Reading]] = []
    open_groups: dict[str, tuple[list[Reading], set[str]]] = {}
    last_device: str | None = None
    group: list[Reading] | None = None
    tags: set[str] = set()
    for reading in readings:
        fields = reading.__dict__
        device, tag = fields["device"], fields["tag"]
        if device != last_device:  # a batch holds runs of one device's readings: look up once
            last_device = device
            group, tags = open_groups.get(device) or (None, tags)
        if group is None or tag in tags:
            group, tags = [], set()
            groups.append(group)
            open_groups[device] = (group, tags)
        group.append(reading)
        tags.add(tag)
    return groups


def encode_device_payload(readings: Sequence[Reading]) -> bytes:
    """One device's cycle: `{"ts": latest source time, "values": {tag: value},
    "units": {tag: unit}}` plus `"bad"`/`"uncertain"`: {tag: reason} when any is."""
    values: dict[str, object] = {}
    units: dict[str, str] = {}
    flagged: dict[str, dict[str, str]] = {}
    latest = last_ts = readings[0].source_ts
    exact = True
    for reading in readings:
        fields = reading.__dict__  # (a dict lookup is cheaper than the model's attribute)
        value: object = fields["value"]
        tag = fields["tag"]
        kind = type(value)
        # _json_value only where it changes something (measured: a quarter less time per cycle).
        if (fields["quality"] is not _GOOD or kind is tuple
                or (kind is float and not math.isfinite(value))):  # type: ignore[arg-type]
            value, quality, error = _json_value(reading)
            exact = exact and _orjson_exact(value)
            if quality is not _GOOD:
                flagged.setdefault(quality.value, {})[tag] = error or quality.value
        elif kind is float and -1e-4 < value < 1e-4 and value:  # type: ignore[operator]
            exact = False
        values[tag] = value
        unit = fields["unit"]
        if unit is not None:
            units[tag] = unit
        ts = fields["source_ts"]
        if ts is not last_ts:  # a poll's readings share one timestamp object
            last_ts = ts
            if ts > latest:
                latest = ts
    payload: dict[str, object] = {"ts": iso_z(latest), "values": values}
    if units:
        payload["units"] = units
    payload.update(flagged)
    return _dump(payload, exact)
