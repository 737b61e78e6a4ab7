"""How many registers or bits one request may carry (pure), as the Modbus spec says.

pymodbus 3.16 refuses an oversized read while decoding it and answers exception 1 (illegal
function); a real device answers exception 3 (illegal data value). The simulator decodes any
quantity (server.py) and answers with `quantity_refused`.
"""

from __future__ import annotations

READ_REGISTERS = 125  # functions 3, 4
READ_BITS = 2000  # functions 1, 2
WRITE_REGISTERS = 123  # function 16
WRITE_COILS = 1968  # function 15
READ_FUNCTIONS = frozenset({1, 2, 3, 4})


def quantity_limit(function_code: int, max_read_registers: int = READ_REGISTERS,
                   max_read_bits: int = READ_BITS) -> int | None:
    """The largest quantity a request of `function_code` may ask for (None: not counted).
    `max_read_*`: a device that takes fewer than the spec allows (many meters do)."""
    return {1: max_read_bits, 2: max_read_bits, 3: max_read_registers, 4: max_read_registers,
            15: WRITE_COILS, 16: WRITE_REGISTERS}.get(function_code)


def quantity_refused(function_code: int, count: int, max_read_registers: int = READ_REGISTERS,
                     max_read_bits: int = READ_BITS) -> bool:
    """Is `count` outside 1..limit for this function (answered with exception 3)?"""
    limit = quantity_limit(function_code, max_read_registers, max_read_bits)
    return limit is not None and not 1 <= count <= limit
