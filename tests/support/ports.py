"""Free loopback ports, for the tests and the benchmarks (bench/ imports tests.support; nothing here imports
either)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; a race with other processes is possible)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Blackhole:
    """A loopback address that never answers a SYN, like a host behind a firewall that drops packets: a
    listening socket with a backlog of 0 whose accept queue is kept full and never accepted from. Linux then
    drops every new SYN, so a connect to it waits for the kernel's retries (about two minutes), deterministically
    and without any network."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fill: list[socket.socket] = []
        for _ in range(3):  # the queue holds backlog + 1; the rest wait in SYN_SENT, which is fine
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fill.append(s)

    def close(self) -> None:
        for s in self._fill:
            s.close()
        self._listener.close()
