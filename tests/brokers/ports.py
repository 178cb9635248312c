"""Loopback port choice for brokers the test suite starts itself.

Owns nothing but the choice of a port number. The kernel hands out an unused ephemeral port
for a bind to port 0; we close the socket and give the number to a child process. Another
process may take the port in between, so callers must detect a failed start and retry with a
fresh port (TansuBroker does). Imports only the standard library.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
