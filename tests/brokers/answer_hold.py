"""A TCP relay in front of tansu that can hold back the broker's answers: requests go through
(tansu appends the batches), answers wait. What a kill -9 of a producer with requests in flight
needs to be certain, not lucky: every batch it wrote was appended, none was answered.

``AnswerHold().start(upstream)``; tansu advertises its port (``TansuBroker(advertised_port=)``)
so clients following Metadata stay behind it. ``hold()`` withholds every answer on the
connections open now (connections opened later pass freely: a replacement worker, the next
daemon); ``release()`` forwards what was held to clients still connected and passes everything
from then on. ``produce_requests_held`` counts Produce requests (api key 0) forwarded on held
connections. ``hold_after(api_key)`` holds instead the answers of any connection from its next
request of that API on (EndTxn: the coordinator commits, the producer never hears so), until
``release()``; ``answer_bytes_held`` says when such an answer has arrived. ``cut()`` closes
every connection open now, dropping what it held: after ``hold()`` and a Produce request
forwarded, that cuts the client off mid-request (tansu appended, the client never hears).
A thread per direction per connection; imports no kpd code.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.brokers.ports import LOOPBACK

PRODUCE = 0


class _Link:
    """One client connection and its upstream twin."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.held: bytearray | None = None  # answers withheld while not None


class AnswerHold:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._upstream: tuple[str, int] | None = None
        self._lock = threading.Lock()  # guards _links, each link's held and the counter
        self._links: list[_Link] = []
        self.produce_requests_held = 0
        self._hold_key: int | None = None  # hold_after's API key, until release()
        self._stopped = False

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, upstream: str) -> AnswerHold:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def hold(self) -> None:
        with self._lock:
            for link in self._links:
                link.held = bytearray()

    def hold_after(self, api_key: int) -> None:
        with self._lock:
            self._hold_key = api_key

    @property
    def answer_bytes_held(self) -> int:
        with self._lock:
            return sum(len(link.held or b"") for link in self._links)

    def release(self) -> None:
        with self._lock:
            self._hold_key = None
            for link in self._links:
                held, link.held = link.held, None
                if held:
                    with contextlib.suppress(OSError):
                        link.client.sendall(held)

    def cut(self) -> None:
        with self._lock:
            links, self._links = self._links, []
            self.produce_requests_held = 0
        for link in links:
            _close(link)

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            for link in self._links:
                _close(link)

    def __enter__(self) -> AnswerHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._sock.accept()
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                return
            upstream.settimeout(None)
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._answers, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        """Client -> tansu, frame by frame (to count the Produce requests)."""
        buf = bytearray()
        try:
            while data := link.client.recv(65536):
                buf += data
                while len(buf) >= 6 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
                    size = 4 + struct.unpack_from(">i", buf)[0]
                    (api_key,) = struct.unpack_from(">h", buf, 4)
                    with self._lock:
                        if api_key == PRODUCE and link.held is not None:
                            self.produce_requests_held += 1
                        if api_key == self._hold_key and link.held is None:
                            link.held = bytearray()  # from this request's answer on
                    link.upstream.sendall(buf[:size])
                    del buf[:size]
        except OSError:
            pass
        _close(link)

    def _answers(self, link: _Link) -> None:
        """tansu -> client, or into the link's hold."""
        try:
            while data := link.upstream.recv(65536):
                with self._lock:
                    if link.held is not None:
                        link.held += data
                        continue
                link.client.sendall(data)
        except OSError:
            pass
        _close(link)


def _close(link: _Link) -> None:
    for sock in (link.client, link.upstream):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
