"""The live view's cell text for values."""

import pytest

from gateway.live import format_value

pytestmark = pytest.mark.unit


def test_floats_get_three_decimals_and_other_scalars_their_text() -> None:
    assert format_value(21.56789) == "21.568"
    assert format_value(7) == "7"
    assert format_value(True) == "True"
    assert format_value("O1000") == "O1000"
    assert format_value(None) == "None"


def test_an_array_is_a_short_list_that_says_how_long_it_is() -> None:
    assert format_value((1.0, 2.5, 3)) == "[1.000, 2.500, 3]"
    assert format_value(()) == "[]"
    long = format_value(tuple(range(10)))
    assert long == "[0, 1, 2, 3, 4, 5, ... (10 items)]"


def test_an_enumeration_code_carries_its_text_as_on_the_status_page() -> None:
    states = {2: "injecting", 3: "holding", 4: "cooling"}
    assert format_value(3, enum=states) == "3 holding"
    assert format_value(9, enum=states) == "9", "a code the map does not know stays a number"
    assert format_value(True, enum={1: "on"}) == "True", "a bool is not a code"
    assert format_value(3) == "3"


def test_the_live_rows_of_an_enum_tag_show_its_text() -> None:
    """From the config to the row, as `gateway run --live` draws it."""
    from datetime import UTC, datetime

    from gateway.config import parse_config
    from gateway.live import tag_rows
    from gateway.models import Quality, Reading
    from gateway.state import GatewayState

    config = parse_config("""
gateway: {id: live-enum}
devices:
  - name: moulding-02
    driver: modbus
    connection: {host: 127.0.0.1, port: 5020, unit_id: 2}
    tags:
      - {name: state, table: input, address: 0, type: uint16, enum: {3: holding}}
      - {name: count, table: input, address: 1, type: uint16}
sinks: {mqtt: {url: "mqtt://127.0.0.1:1883"}}
""", env={})
    state = GatewayState(config=config, sinks=[])
    now = datetime.now(UTC)
    state.tags.update([Reading(device="moulding-02", tag=tag, value=3, quality=Quality.GOOD,
                               source_ts=now) for tag in ("state", "count")])
    values = {row.tag: row.value for row in tag_rows(state)}
    assert values == {"state": "3 holding", "count": "3"}
