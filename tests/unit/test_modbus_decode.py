"""The Modbus driver's shortcut for plain 16-bit tags makes the same readings as the codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.driver import ModbusDriver

pytestmark = pytest.mark.unit
TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)

tags = st.fixed_dictionaries(
    {"type": st.sampled_from(["uint16", "int16", "bool", "float32"]),
     "byte_order": st.sampled_from(["big", "little"])},
    optional={"scale": st.sampled_from([1.0, 0.1, 2.0]), "offset": st.sampled_from([0.0, 5.0]),
              "unit": st.sampled_from(["degC", "rpm"])},
).filter(lambda spec: spec["type"] != "bool" or not spec.keys() & {"scale", "offset"})
registers = st.integers(-2, 0x10001) | st.integers(0, 0xFFFF)


def _driver(specs: list[dict[str, Any]]) -> ModbusDriver:
    tag_list, address = [], 0
    for i, spec in enumerate(specs):
        tag_list.append({"name": f"t{i}", "table": "holding", "address": address, **spec})
        address += 2 if spec["type"] == "float32" else 1
    return ModbusDriver(ModbusDeviceConfig.model_validate(
        {"name": "press-01", "driver": "modbus", "connection": {"host": "127.0.0.1"},
         "tags": tag_list}))


@given(specs=st.lists(tags, min_size=1, max_size=12), data=st.data(),
       arrived=st.sampled_from([TS, TS.astimezone(timezone(timedelta(hours=1)))]))
def test_decode_equals_the_codec_for_every_tag(specs: list[dict[str, Any]],
                                               data: st.DataObject, arrived: datetime) -> None:
    """Also for an arrival time in another zone (the readings' own are UTC)."""
    driver = _driver(specs)
    for request in driver.plan.requests:
        values = data.draw(st.lists(registers, min_size=request.count, max_size=request.count))
        expected = [driver._reading(driver.tags[span.name], values, request.start, arrived)
                    for span in request.tags]
        decoded = driver.decode(request, values, arrived)
        assert decoded == expected
        assert [type(r.value) for r in decoded] == [type(r.value) for r in expected]
        assert all(r.source_ts.tzinfo is UTC and r.source_ts == TS for r in decoded)
