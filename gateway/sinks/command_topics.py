"""MQTT command topics and payloads (pure): which topic filters to subscribe to, which (device,
tag) an incoming command topic is about, and what its payload asks for.

A tag's command topic is its data topic (the sink's `topic` template) plus `/set`; its result
topic is that plus `/set/result`. Every level of the template that holds `{tag}` becomes a `+`
in the subscription, so one filter per device covers all of its tags, and tags added by a
reload need no new subscription.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.sinks.mqtt_wire import level, render_topic

SET = "/set"
RESULT = "/set/result"
_SENTINEL = "\ue000"  # a private-use character: never in a name, untouched by level()


@dataclass(frozen=True)
class DeviceCommands:
    """One device's command topics: `filter` to subscribe to, `pattern` to match back."""

    device: str
    filter: str
    pattern: re.Pattern[str]


def device_commands(template: str, device: str, values: Mapping[str, str]) -> DeviceCommands:
    """The command topics of `device`, whose topic levels other than `{tag}` are `values`."""
    rendered = render_topic(template, {**values, "device": device, "tag": _SENTINEL})
    levels = rendered.split("/")
    topic_filter = "/".join("+" if _SENTINEL in part else part for part in levels) + SET
    pieces = rendered.split(_SENTINEL)
    regex = re.escape(pieces[0]) + "".join(
        ("(?P<tag>[^/]+)" if i == 0 else "(?P=tag)") + re.escape(piece)
        for i, piece in enumerate(pieces[1:]))
    return DeviceCommands(device, topic_filter, re.compile(regex + re.escape(SET)))


def match_command(topic: str, devices: Iterable[DeviceCommands]) -> tuple[str, str] | None:
    """(device, the tag's topic level) of a command topic, or None when it is no configured
    device's command topic. The first device in config order wins where templates overlap."""
    for commands in devices:
        found = commands.pattern.fullmatch(topic)
        if found is not None:
            return commands.device, found.group("tag")
    return None


def tag_of_level(topic_level: str, tags: Iterable[str]) -> str:
    """The tag whose topic level this is (a name with `/` or `+` is published with `_`);
    the level itself when no tag has it, so that the answer names what was asked."""
    for tag in tags:
        if level(tag) == topic_level:
            return tag
    return topic_level


def result_topic(command_topic: str) -> str:
    return command_topic + "/result"


class CommandPayloadError(ValueError):
    """A command payload that asks for nothing: the result says why."""


@dataclass(frozen=True)
class CommandRequest:
    value: object
    id: str | None = None


_ENVELOPE_KEYS = frozenset({"value", "id"})


def parse_command(payload: bytes) -> CommandRequest:
    """`{"value": V, "id": "..."}` (id optional) or a bare JSON value. Raises
    CommandPayloadError with the reason; the id is kept on the error when it was readable."""
    if not payload.strip():
        raise CommandPayloadError("empty payload: send {\"value\": ...} or a JSON value")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandPayloadError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        return CommandRequest(data)
    command_id = data.get("id")
    if command_id is not None and not isinstance(command_id, str):
        raise CommandPayloadError("id must be a string")
    error = _envelope_problem(data)
    if error:
        raise CommandIdError(error, command_id)
    return CommandRequest(data["value"], command_id)


class CommandIdError(CommandPayloadError):
    """A payload whose id could be read, but not the rest: answered with that id."""

    def __init__(self, message: str, command_id: str | None) -> None:
        super().__init__(message)
        self.id = command_id


def _envelope_problem(data: dict[str, object]) -> str | None:
    unknown = sorted(set(data) - _ENVELOPE_KEYS)
    if unknown:
        return f"unknown key {unknown[0]!r}: a command is {{\"value\": ..., \"id\": ...}}"
    if "value" not in data:
        return "no value: a command is {\"value\": ..., \"id\": ...}"
    return None
