"""PTYs for envd's process service, made inside the sandbox by a small relay.

The jail spawns processes with pipes, so a PTY command runs under ``RELAY``: a short Python
program, run by the sandbox's own interpreter, that opens a pseudo-terminal (``pty.fork``),
runs the command on it, copies the terminal's output to its stdout, and reads framed
messages on its stdin: terminal input, or a new window size. The relay exits with the
command's status (re-raising a fatal signal), so the end event reads as the command's own.

Frames on the relay's stdin: one kind byte (``INPUT`` or ``RESIZE``), a 4-byte big-endian
length, the payload (raw bytes, or rows and cols as two big-endian 16-bit numbers).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# The sandbox Python environment, where the jail mounts it in every sandbox.
SANDBOX_PYTHON = "/opt/python/bin/python3"
INPUT = ord("d")
RESIZE = ord("r")

RELAY = r"""
import fcntl, os, pty, select, signal, struct, sys, termios

rows, cols, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        os.write(2, f"{argv[0]}: {error.strerror}\n".encode())
        os._exit(127)

def resize(r, c):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", r, c, 0, 0))

def write_all(target, data):
    while data:
        data = data[os.write(target, data):]

for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(number, lambda number, _frame: os.killpg(pid, number))
resize(rows, cols)
pending, reading = b"", True
while True:
    ready = select.select([fd, 0] if reading else [fd], [], [])[0]
    if fd in ready:
        try:
            out = os.read(fd, 65536)
        except OSError:
            out = b""
        if not out:
            break
        write_all(1, out)
    if 0 in ready:
        chunk = os.read(0, 65536)
        reading = bool(chunk)
        pending += chunk
        while len(pending) >= 5:
            size = int.from_bytes(pending[1:5], "big")
            if len(pending) < 5 + size:
                break
            kind, payload, pending = pending[0], pending[5:5 + size], pending[5 + size:]
            if kind == 100:
                write_all(fd, payload)
            elif kind == 114 and len(payload) == 4:
                resize(*struct.unpack(">HH", payload))
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def relay_argv(command: Sequence[str], *, rows: int, cols: int) -> list[str]:
    """The argv that runs ``command`` on a new PTY of ``rows`` x ``cols`` in the sandbox.

    The sandbox's own interpreter runs it by absolute path (a ``PATH`` from the command's
    envs cannot swap it) with ``-I``, isolated from PYTHONPATH, PYTHONSTARTUP and user site.
    """
    return [SANDBOX_PYTHON, "-I", "-c", RELAY, str(rows or 24), str(cols or 80), *command]


def input_frame(data: bytes) -> bytes:
    """A frame that types ``data`` into the terminal."""
    return bytes([INPUT]) + struct.pack(">I", len(data)) + data


def resize_frame(rows: int, cols: int) -> bytes:
    """A frame that sets the terminal's window size."""
    return bytes([RESIZE]) + struct.pack(">IHH", 4, rows, cols)
