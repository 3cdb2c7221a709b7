"""The one way this daemon opens a TCP listening socket (the admin and metrics listeners, and the workers'
shared proxy socket): a leaf module, it imports nothing of ours, so any package may use it."""

from __future__ import annotations

import socket


def listening_socket(host: str, port: int, *, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking socket for ``host:port`` (an empty host: every address; port 0: any
    free port). Raises OSError as the system reports it; the caller says which listener could not start."""
    family, kind, proto, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Without SO_REUSEADDR a restart right after a stop fails while the old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
