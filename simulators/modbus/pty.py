"""A pseudo-terminal of the simulator's own, so an RTU line needs no socat.

`ModbusSimulator(serial_port="pty")` serves the master side of a new pty (opened through
/dev/ptmx) and gives clients the slave side's path (`/dev/pts/N`), a real tty that pyserial,
pymodbus and the gateway open like any USB adapter. Bytes cross in the kernel, with no relay
process in between (socat's two hops cost 2.4-2.8 ms per exchange on the bus bench).

The simulator also holds one descriptor of the slave side open: without it, the master
reports a hang-up (POLLHUP, then EIO on read) as soon as a client closes its last descriptor,
and pymodbus would close the server's line for good at the client's first reconnect.
"""

from __future__ import annotations

import fcntl
import os
import struct

PTY = "pty"  # the serial_port value that asks for a pty of the simulator's own
PTY_MASTER = "/dev/ptmx"  # opening it makes a new master; its slave is /dev/pts/<number>
_TIOCGPTN = 0x80045430  # Linux: the slave's number of a master
_TIOCSPTLCK = 0x40045431  # Linux: lock (1) or unlock (0) the slave (unlockpt(3))


class PtyError(OSError):
    """The pty's slave side could not be found or opened."""


def claim_slave(master_fd: int) -> tuple[str, int]:
    """Unlock the slave side of `master_fd` and open it; (its path, the held descriptor)."""
    try:
        number = struct.unpack("I", fcntl.ioctl(master_fd, _TIOCGPTN, b"\0" * 4))[0]
        fcntl.ioctl(master_fd, _TIOCSPTLCK, struct.pack("i", 0))
        path = f"/dev/pts/{number}"
        held = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        raise PtyError(f"cannot open the slave side of pty master {master_fd}: {exc}") from exc
    return path, held
