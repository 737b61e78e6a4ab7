"""Topic templates (pure): validation, rendering, sanitizing of names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sinks.mqtt_wire import level, render_topic, status_topic, validate_topic_template

pytestmark = pytest.mark.unit
DEFAULT = "{site}/{area}/{line}/{device}/{tag}"
VALUES = {"gateway": "edge-01", "site": "jeonju", "area": "stamping", "line": "line-1",
          "device": "press-01", "tag": "oil_temperature"}
ORDER = ("site", "area", "line", "device", "tag")


def refused_by_mosquitto(char: str) -> bool:
    """mosquitto 2.0's check of topic strings (measured: such a PUBLISH drops the client)."""
    code = ord(char)
    return (code <= 0x1F or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF
            or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE)


def test_default_template_renders_the_isa95_path() -> None:
    assert render_topic(DEFAULT, VALUES) == "jeonju/stamping/line-1/press-01/oil_temperature"


def test_gateway_placeholder_and_literal_levels() -> None:
    assert render_topic("plant/{gateway}/{device}/{tag}", VALUES) == \
        "plant/edge-01/press-01/oil_temperature"


def test_empty_levels_are_left_out() -> None:
    assert render_topic(DEFAULT, {**VALUES, "area": "", "line": ""}) == \
        "jeonju/press-01/oil_temperature"


def test_wildcards_and_slashes_in_names_become_underscores() -> None:
    assert render_topic(DEFAULT, {**VALUES, "device": "a/b", "tag": "x+#"}) == \
        "jeonju/stamping/line-1/a_b/x__"


def test_control_characters_and_noncharacters_become_underscores() -> None:
    assert level("a\x00b\tc\x7fd\x85e\ufffef\U0001ffffg\ud800h") == "a_b_c_d_e_f_g_h"


def test_non_ascii_names_are_kept() -> None:
    assert level("Prüfstand-온도 °C") == "Prüfstand-온도 °C"


def test_a_leading_dollar_is_replaced_because_wildcard_subscribers_never_see_it() -> None:
    assert render_topic(DEFAULT, {**VALUES, "site": "$SYS"}).startswith("_SYS/stamping/")


def test_status_topic() -> None:
    assert status_topic("jeonju", "edge-01") == "jeonju/_gateway/edge-01/status"


def test_status_topic_without_a_site_has_no_empty_level() -> None:
    assert status_topic("", "edge-01") == "_gateway/edge-01/status"


@pytest.mark.parametrize(("template", "message"), [
    ("{site}/{machine}/{tag}", "unknown placeholder {machine}"),
    ("{site}/{0}/{tag}", "unknown placeholder {0}"),
    ("{site}/{device}", "needs {tag}"),
    ("plant/#/{tag}", "wildcards"),
    ("plant/+/{tag}", "wildcards"),
    ("{site/{tag}", "invalid topic template"),
    ("{site}/{tag!r}", "no format spec"),
    ("{site}/{tag:>12}", "no format spec"),
    ("plant\x00/{tag}", "control characters"),
    ("$SYS/{tag}", "reserved"),
])
def test_bad_templates_are_rejected_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate_topic_template(template)


def test_a_good_template_is_returned_unchanged() -> None:
    assert validate_topic_template(DEFAULT) == DEFAULT


def test_device_topic_must_not_name_a_tag() -> None:
    with pytest.raises(ValueError, match="no \\{tag\\}"):
        validate_topic_template("{site}/{device}/{tag}", per_tag=False)
    assert render_topic("{site}/{area}/{line}/{device}", VALUES) == \
        "jeonju/stamping/line-1/press-01"


any_name = st.text(max_size=12)  # every code point, surrogates included


@given(st.fixed_dictionaries({key: any_name for key in ORDER}))
def test_rendered_topics_are_always_publishable(values: dict[str, str]) -> None:
    topic = render_topic(DEFAULT, {**values, "gateway": "g"})
    topic.encode()  # valid UTF-8: no lone surrogate
    assert topic and "+" not in topic and "#" not in topic and not topic.startswith("$")
    assert "" not in topic.split("/")
    assert not any(refused_by_mosquitto(char) for char in topic)


@given(st.fixed_dictionaries({key: st.text(alphabet=st.characters(exclude_characters="$"),
                                           max_size=12) for key in ORDER}))
def test_each_non_empty_name_is_exactly_one_level(values: dict[str, str]) -> None:
    topic = render_topic(DEFAULT, {**values, "gateway": "g"})
    expected = [level(values[key]) for key in ORDER if values[key]]
    assert topic.split("/") == (expected or ["_"])
