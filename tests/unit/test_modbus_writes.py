"""Write planning (pure): the config keys, the refusals, and registers that decode back."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.modbus.codec import apply_scale, decode_registers, register_count
from drivers.modbus.config import ModbusTag
from drivers.modbus.writes import check_writable, plan_write
from gateway.errors import WriteRefused

pytestmark = pytest.mark.unit
NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def tag(**fields: Any) -> ModbusTag:
    return ModbusTag.model_validate({"name": "t", "table": "holding", "address": 0,
                                     "writable": True, **fields})


@pytest.mark.parametrize(("fields", "where", "message"), [
    ({"table": "input"}, "writable", "an input register cannot be written"),
    ({"table": "discrete", "type": "bool"}, "writable", "a discrete input cannot be written"),
    ({"scale": 0}, "writable", "scale 0 cannot be written"),
    ({"type": "float32", "write_single": True}, "write_single", "a float32 needs 2"),
    ({"table": "coil", "type": "bool", "write_single": True}, "write_single",
     "holding registers only"),
    ({"type": "bool", "bit": 2, "min": 0}, "min", "applies to numbers, not type bool"),
    ({"type": "string", "length": 2, "max": 1}, "max", "not type string"),
    ({"min": 10, "max": 5}, "max", "max 5.0 is below min 10.0"),
    ({"min": float("nan")}, "min", "must be a finite number"),
])
def test_write_keys_that_do_not_fit_the_tag_are_config_errors(fields: dict[str, Any],
                                                               where: str,
                                                               message: str) -> None:
    with pytest.raises(ValidationError, match=message) as error:
        tag(**fields)
    assert error.value.errors()[0]["loc"][0] == where


def test_write_keys_default_to_read_only() -> None:
    plain = ModbusTag.model_validate({"name": "t", "table": "holding", "address": 0})
    assert (plain.writable, plain.write_single, plain.min, plain.max) == (False, False, None,
                                                                         None)
    with pytest.raises(WriteRefused, match="tag t is read-only"):
        check_writable(plain, "t")
    with pytest.raises(WriteRefused, match="no tag 'x' on this device"):
        check_writable(None, "x")
    assert tag(type="uint16", write_single=True, bit=None).write_single


@given(st.sampled_from(NUMERIC), st.sampled_from(["big", "little"]),
       st.sampled_from(["big", "little"]), st.data())
def test_planned_registers_decode_to_the_value_written(data_type: str, byte_order: str,
                                                       word_order: str,
                                                       data: st.DataObject) -> None:
    spec = tag(type=data_type, byte_order=byte_order, word_order=word_order)
    size = register_count(data_type)  # type: ignore[arg-type]
    current = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size))
    value = decode_registers(current, spec.type, spec.byte_order, spec.word_order)
    assume(not isinstance(value, float) or math.isfinite(value))
    assert plan_write(spec, value) == current  # writing what is there writes the same


@given(st.integers(-32768, 32767), st.sampled_from([0.1, 0.01, 0.25, 10.0]),
       st.sampled_from([0.0, -40.0, 1.5]))
def test_a_scaled_value_read_is_written_back_as_the_same_raw_register(
        raw: int, scale: float, offset: float) -> None:
    spec = tag(type="int16", scale=scale, offset=offset)
    published = apply_scale(raw, scale, offset)
    assert plan_write(spec, published) == [raw & 0xFFFF]


@pytest.mark.parametrize(("fields", "value", "message"), [
    ({"type": "float32", "max": 100}, 100.5, "100.5 is above the tag's max 100"),
    ({"type": "float32", "min": -10}, -11, "-11 is below the tag's min -10"),
    ({"type": "float32"}, 1e39, "does not fit float32"),
    ({"type": "float32"}, float("inf"), "takes a finite number, not inf"),
    ({"type": "int16"}, 1.5, "not a whole number"),
    ({"type": "int16", "scale": 0.1}, 3276.8, r"raw \(value - 0\) / 0.1\): 32768 does not "
     r"fit int16"),
    ({"type": "uint16"}, None, "takes a number, not None"),
    ({"type": "uint16"}, False, "takes a number, not False"),
    ({"type": "bool", "bit": 1}, "true", "takes true or false, not 'true'"),
    ({"type": "string", "length": 2}, 12, "takes text, not 12"),
    ({"type": "string", "length": 2}, "\u20ac", "not a latin-1 character"),
])
def test_values_that_cannot_be_written_are_refused_with_the_reason(
        fields: dict[str, Any], value: object, message: str) -> None:
    with pytest.raises(WriteRefused, match=message):
        plan_write(tag(**fields), value)


def test_whole_numbers_for_unscaled_integers_and_states_for_bits() -> None:
    assert plan_write(tag(type="int16"), 7.0) == [7]
    assert plan_write(tag(type="int16"), -2) == [0xFFFE]
    assert plan_write(tag(type="bool", bit=4), True) is True
    assert plan_write(tag(table="coil", type="bool"), False) is False
    assert plan_write(tag(type="string", length=2), "OK") == [0x4F4B, 0]
