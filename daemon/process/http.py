"""The supervisor's HTTP endpoint on ``metrics.listen``: ``GET /metrics`` and ``GET /status``.

A tiny HTTP/1.1 server on the supervisor's own asyncio loop: one request per connection,
answered and closed, so no threads and nothing to keep alive. ``/metrics`` is the aggregated
exposition of every process's metric files plus the supervisor's child table; ``/status`` is
``build_status`` as JSON. Anything else is 404, any method but GET/HEAD is 405.

Owns the listening socket only. Must not import uvloop or signal; it reads the supervisor's
children through the callable it is given, never through the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from daemon.metrics import SupervisorCollector, render_metrics
from daemon.process.status.document import build_status, child_states

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 8192  # request line plus headers; a scraper sends a few hundred
_READ_TIMEOUT_S = 10.0  # a client that opens and says nothing must not hold a task forever
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


class MetricsServer:
    """``children`` returns the supervisor's current ``Child`` objects; ``config_state`` the
    supervisor's configuration state (file, settings waiting for a restart, last reload);
    ``rings`` what the supervisor did with the ring files at start (``RingFiles.status()``)
    or None."""

    def __init__(
        self,
        listen: tuple[str, int],
        metrics_dir: str | Path,
        status_dir: str | Path,
        children: Callable[[], Iterable[Any]],
        config_state: Callable[[], dict] = dict,
        rings: Callable[[], dict | None] = lambda: None,
    ) -> None:
        self._listen = listen
        self._metrics_dir = metrics_dir
        self._status_dir = status_dir
        self._children = children
        self._config_state = config_state
        self._rings = rings
        self._collector = SupervisorCollector(lambda: child_states(self._children()))
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (``metrics.listen`` may ask for port 0)."""
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        host, port = self._listen
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("metrics and status on http://%s:%d/", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            try:
                status, content_type, body = self._answer(head)
            except Exception:  # e.g. an unreadable metric file: say so, keep serving
                log.exception("answering %r failed", head.split(b"\r\n", 1)[0])
                status, content_type, body = _text(500, "internal error, see the kpd log")
            method = head.split(b" ", 1)[0]
            writer.write(
                _response(status, content_type, b"" if method == b"HEAD" else body, len(body))
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # the client went away or sent junk: nothing to answer
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        if len(head) > _MAX_HEAD_BYTES:
            return _text(400, "request too large")
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _text(400, "bad request line")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _text(405, "only GET")
        if target == b"/metrics":
            # Reads the small mmap files of every process: a millisecond or so on tmpfs.
            body, content_type = render_metrics(self._metrics_dir, (self._collector,))
            return 200, content_type, body
        if target == b"/status":
            document = build_status(
                child_states(self._children()), self._status_dir, rings=self._rings()
            )
            document["config"] = self._config_state()
            return 200, "application/json", json.dumps(document, indent=1).encode()
        return _text(404, "try /metrics or /status")


def _text(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain; charset=utf-8", (message + "\n").encode()


def _response(status: int, content_type: str, body: bytes, length: int) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
