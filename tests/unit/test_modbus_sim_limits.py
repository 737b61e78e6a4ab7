"""The spec's quantity limits the simulator answers exception 3 beyond (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simulators.modbus.limits import quantity_limit, quantity_refused


def test_the_spec_limits() -> None:
    assert [quantity_limit(f) for f in (1, 2, 3, 4, 15, 16, 5, 6)] == [
        2000, 2000, 125, 125, 1968, 123, None, None]


@given(st.sampled_from([1, 2, 3, 4, 15, 16]), st.integers(0, 0xFFFF), st.integers(1, 125))
def test_refused_exactly_outside_one_to_the_limit(function: int, count: int,
                                                  device_max: int) -> None:
    limit = quantity_limit(function, max_read_registers=device_max)
    assert limit is not None
    assert quantity_refused(function, count, max_read_registers=device_max) == (
        not 1 <= count <= limit)


def test_single_writes_have_no_quantity() -> None:
    assert not quantity_refused(6, 0)
