"""`gateway discover`'s pure half: tag names from browse paths, node id text, the YAML."""

from __future__ import annotations

import re

import pytest
import yaml
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.config import OpcUaDeviceConfig, OpcUaTag
from drivers.opcua.discover import (
    FoundVariable,
    device_name,
    node_text,
    path_filter,
    render_device,
    tag_name,
    unique,
)

pytestmark = pytest.mark.unit
TAG_NAME = re.compile(r"^[^/#+\s]+$")
NAMESPACES = ["http://opcfoundation.org/UA/", "urn:vendor:server", "urn:shopfloor:cnc"]


def test_tag_name_joins_the_browse_path_with_dots() -> None:
    assert tag_name(("Cnc", "Spindle", "Speed")) == "Cnc.Spindle.Speed"


def test_tag_name_replaces_what_topics_and_the_pattern_forbid() -> None:
    assert tag_name(("Line 1", "Temp/Oil #2", "a+b")) == "Line_1.Temp_Oil_2.a_b"
    assert tag_name((" ", "/")) == "tag"


@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=4))
def test_every_browse_path_gives_a_valid_tag_name(path: list[str]) -> None:
    assert TAG_NAME.match(tag_name(path))


def test_repeated_names_get_a_suffix_that_clashes_with_nothing() -> None:
    assert unique(["a", "b", "a", "a_2", "a"]) == ["a", "b", "a_2", "a_2_2", "a_3"]


@given(st.lists(st.sampled_from(["x", "x_2", "y", "x_3"]), max_size=12))
def test_unique_names_are_unique_and_keep_first_ones(names: list[str]) -> None:
    out = unique(names)
    assert len(set(out)) == len(out) == len(names)
    assert all(o.startswith(n) for o, n in zip(out, names, strict=True))


@pytest.mark.parametrize(("node", "text"), [
    (ua.NodeId("Cnc.SpindleSpeed", 2), "nsu=urn:shopfloor:cnc;s=Cnc.SpindleSpeed"),
    (ua.NodeId(1001, 1), "nsu=urn:vendor:server;i=1001"),
    (ua.NodeId(2258, 0), "i=2258"),
    (ua.NodeId("x", 7), "ns=7;s=x"),  # an index the namespace table does not have
])
def test_node_text_names_the_namespace_by_uri(node: ua.NodeId, text: str) -> None:
    assert node_text(node, NAMESPACES) == text
    OpcUaTag(name="t", node=text)  # the config accepts it


def test_node_text_keeps_the_index_when_the_uri_holds_a_semicolon() -> None:
    assert node_text(ua.NodeId("x", 1), ["", "urn:a;b"]) == "ns=1;s=x"


@pytest.mark.parametrize(("endpoint", "name"), [
    ("opc.tcp://10.0.0.7:4840", "opcua-10-0-0-7"),
    ("opc.tcp://plc7.plant.local:4840/UA/Server", "plc7"),
    ("opc.tcp://[fe80::1]:4840", "opcua-fe80-1"),
])
def test_device_name_comes_from_the_host(endpoint: str, name: str) -> None:
    assert device_name(endpoint) == name


def test_path_filter_globs_the_dotted_path() -> None:
    keep = path_filter("Cnc.Spindle*")
    assert keep(("Cnc", "SpindleSpeed")) and not keep(("Cnc", "FeedRate"))
    assert path_filter(None)(("anything",))


VARIABLES = [
    FoundVariable(("Cnc", "SpindleSpeed"), "nsu=urn:shopfloor:cnc;s=Cnc.SpindleSpeed",
                  "Double", "r/min"),
    FoundVariable(("Cnc", "Load %"), "nsu=urn:shopfloor:cnc;s=Cnc.Load", "Double", "%"),
    FoundVariable(("Cnc", "Load_%"), "nsu=urn:shopfloor:cnc;s=Cnc.Load2", "Float", None),
    FoundVariable(("Temp: \"oil\"",), "ns=3;s=a: #b", "Int16[]", "°C"),
]


def test_rendered_device_is_a_valid_config_entry() -> None:
    text = render_device("cnc-01", {"endpoint": "opc.tcp://127.0.0.1:4840/",
                                    "timeout": "4s"}, VARIABLES, "found 4\nsecond line")
    [device] = yaml.safe_load(text)
    config = OpcUaDeviceConfig.model_validate(device)
    assert [t.name for t in config.tags] == ["Cnc.SpindleSpeed", "Cnc.Load_%", "Cnc.Load_%_2",
                                             'Temp:_"oil"']
    assert [t.unit for t in config.tags] == ["r/min", "%", None, "°C"]
    assert config.tags[3].node == "ns=3;s=a: #b"
    assert text.startswith("# found 4\n# second line\n- name: ")


def test_data_type_is_a_comment_on_the_node_line() -> None:
    text = render_device("d", {"endpoint": "opc.tcp://h:1"}, VARIABLES[:1])
    assert '      node: "nsu=urn:shopfloor:cnc;s=Cnc.SpindleSpeed"  # Double\n' in text


@given(st.text(min_size=1, max_size=20))
def test_any_browse_name_survives_the_yaml(name: str) -> None:
    variable = FoundVariable((name,), f"ns=2;s={name}", "String")
    text = render_device("d", {"endpoint": "opc.tcp://h:1"}, [variable])
    [device] = yaml.safe_load(text)
    assert device["tags"][0]["name"] == tag_name((name,))
    assert device["tags"][0]["node"] == f"ns=2;s={name}"
