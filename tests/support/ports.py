"""Free loopback ports, for the tests and the benchmarks (bench/ imports tests.support; nothing here imports
either)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; a race with other processes is possible)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _fill_accept_queue(port: int) -> list[socket.socket]:
    """Connections that fill a backlog-0 listener's accept queue on `port` (never accepted: kept open, they make
    Linux drop every later SYN). The queue holds backlog + 1; the rest wait in SYN_SENT, which is fine."""
    fill = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(s)
    return fill


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
        self._fill: list[socket.socket] = _fill_accept_queue(self.port)

    def close(self) -> None:
        for s in self._fill:
            s.close()
        self._listener.close()


class TurnsDropping:
    """A loopback TCP relay to `target` that serves one connection, then (after `drop()`) cuts it and turns into
    a `Blackhole`: like an upstream host that goes behind a dropping firewall between two requests. For a
    reconnect inside a tunnel that the proxy makes after the first connection ended."""

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self._target = target
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._pair: list[socket.socket] = []
        self._fill: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve_one, daemon=True)
        self._thread.start()

    def _serve_one(self) -> None:
        import threading

        client, _ = self._listener.accept()
        upstream = socket.create_connection(self._target)
        self._pair = [client, upstream]

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def drop(self) -> None:
        """Cut the relayed connection and drop every SYN from now on."""
        for s in self._pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._fill = _fill_accept_queue(self.port)

    def close(self) -> None:
        for s in [*self._pair, *self._fill]:
            s.close()
        self._listener.close()
