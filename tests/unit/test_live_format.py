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
