"""Serve the project with N daphne worker processes on one address (`make run WORKERS=N`).

One listening socket is opened here and handed to every worker (`daphne --fd`); the kernel
spreads new connections among the processes accepting on it, so no proxy is needed in front
of them on one machine. Workers share the database and the Redis channel layer (a run
started through one streams to sockets of another) and each holds its own worker lease
(execution/services/workers.py). A TERM or INT stops them all; if one worker exits, the
others are stopped too and this exits non-zero, so `make run` does not limp on.

Usage: python scripts/serve_workers.py HOST PORT WORKERS [daphne arguments...]
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from types import FrameType


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.set_inheritable(True)
    return listener


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[2].isdigit() or int(argv[2]) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, workers, extra = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    listener = listening_socket(host, port)
    fd = listener.fileno()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "daphne", "--fd", str(fd), *extra, "atlaschat.asgi:application"],
            pass_fds=(fd,),
        )
        for _ in range(workers)
    ]
    print(f"serve_workers: {workers} daphne workers on {host}:{port}", flush=True)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
