"""What the supervisor hands a child, and the pipe it travels on.

The supervisor validates the configuration once and gives every child its settings by value:
a child never reads the YAML file, so a restarted child runs exactly what its siblings run,
whatever has happened to the file since (an edit, a typo, a deletion). The child's stdin is a
pipe from the supervisor carrying length-prefixed messages: first its ``ChildSpec``, later a
``LiveSettings`` whenever a SIGHUP changed a setting that applies without a restart. (Its
stdout carries the child's status lines back: ``READY``, ``QUIESCED``, ``STOPPED ...``.)

The messages are pickles: both ends are the same kpd code, the writer is the reader's parent
and the pipe is private to the two, so there is no untrusted input here; pickle keeps the
frozen settings dataclasses whole without a second encoding of the schema.

Must not import the supervisor, the engines or uvloop.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from daemon.config import DaemonConfig, LogSettings

__all__ = [
    "ChildSpec",
    "LiveSettings",
    "RingEnd",
    "encode_message",
    "read_first_message",
    "read_messages",
]

_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class RingEnd:
    """One ring a child attaches to: its ring file's path and its eventfd numbers (which
    the child inherits through ``pass_fds``)."""

    path: str
    fds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Everything one child runs with. ``config`` is the supervisor's validated running
    configuration (with ``bootstrap.servers: embedded`` already resolved to the embedded
    broker's address); the rings are the worker's own pair, or every pair for ingest."""

    role: str  # "worker" or "ingest"
    index: int
    config: DaemonConfig
    records: tuple[RingEnd, ...]
    reports: tuple[RingEnd, ...]
    status_dir: str | None
    listen_fd: int | None  # the socket systemd passed (socket activation), for ingest

    @property
    def name(self) -> str:
        return self.role if self.role == "ingest" else f"{self.role}-{self.index}"


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """Settings a SIGHUP applies to running children without a restart."""

    log: LogSettings


def encode_message(message: ChildSpec | LiveSettings) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the supervisor closed the pipe before the whole message arrived")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_first_message(fd: int = 0) -> ChildSpec:
    """Block until the child's spec has arrived on ``fd`` (before any event loop runs)."""
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    spec = pickle.loads(_read_exactly(fd, size))
    if not isinstance(spec, ChildSpec):
        raise TypeError(f"expected a ChildSpec first, got {type(spec).__name__}")
    return spec


async def read_messages(fd: int = 0) -> AsyncIterator[LiveSettings]:
    """The messages after the spec, until the supervisor closes the pipe (or dies)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while True:
            try:
                head = await reader.readexactly(_LENGTH.size)
                body = await reader.readexactly(_LENGTH.unpack(head)[0])
            except asyncio.IncompleteReadError:
                return
            yield pickle.loads(body)
    finally:
        transport.close()
