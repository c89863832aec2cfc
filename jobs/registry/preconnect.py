"""TCP connections begun while a command is still starting up.

A command line run pays its start-up (the interpreter, asyncio, the engine: 100 to 200
ms) and then, before its first answer, a connection set-up to each registry (a round
trip, more over TLS). `start` begins those connections (non-blocking `connect`) as soon
as the input is validated, so the kernel does the handshakes while the rest of the
program is imported; `jobs.registry.http.HttpClient` takes them (`take`) for its first requests,
waits for a handshake still under way, and does TLS on them itself. Standard library
only, and not asyncio: importing it is the start-up this overlaps. No thread either: a
thread would wait for the interpreter lock behind the imports. A connection never taken
is closed at exit.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Address = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]

_started: dict[tuple[str, int], list[tuple[socket.socket, Address]]] = {}


def host_port(api_host: str, default_port: int) -> tuple[str, int]:
    """`registry:5000`, `[::1]:5000` or `registry` as (host, port)."""
    parts = urlsplit(f"//{api_host}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or api_host, port or default_port


def start(targets: Iterable[tuple[str, int, int]]) -> None:
    """Begin `count` connections to each `(host, port, count)`; failures are silent (the
    request that needs a connection opens its own and says what is wrong)."""
    for host, port, count in targets:
        if count <= 0:
            continue
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
        except OSError:
            continue
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            if sock.connect_ex(address) in (0, errno.EINPROGRESS):
                _started.setdefault((host, port), []).append((sock, address))
            else:
                sock.close()


def take(host: str, port: int) -> tuple[socket.socket, Address] | None:
    """A connection to (host, port) begun by `start` (connected or still connecting, to
    `address`), if there is one left."""
    started = _started.get((host, port))
    return started.pop() if started else None
