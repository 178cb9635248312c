"""send()'s hot path: one plain record appended to its partition's open frame, in one call.

Owns ``Appender``, whose ``add`` is ``Framer.add`` itself. Its straight line is a record
without timestamp or headers, with bytes (or None) key and value, of a topic already seen,
that does not fill its partition's open frame; a partition without one gets one from
``opener(entry, partition)`` (``Framer._open``, which raises the session's ``wake`` for the
first open frame: the caller acts on it as after any add). It picks the partition as
``kpd.partitioner`` does — Java's murmur2 of the key (through the topic's key memo, which it
fills as ``TopicPlacement.for_key`` does), or the current KIP-794 sticky run of a keyless
record while that run has room — appends key and value to the frame's columns, and returns
the record's ``RecordFuture``. Anything else (a new topic, no open frame, a frame the record
would fill, a keyless run that must move, a keyed record while the partition count is
unknown, other argument types, a bad partition, a timestamp or headers) changes nothing here
(but for a frame it may have opened, still empty, which the general path then uses) and is
handed, with the same arguments, to ``general`` (the framer's general path), whose result it
returns.

``send`` is the sync Producer's send() itself (the Producer binds it; arguments in send()'s
order): under the Producer's lock, taken without waiting, it checks what Producer.send checks
— the session takes records, the connection is up, the buffer is not over its bound — and
appends a plain record as ``add`` does, all in one call; if that raised the session's
``wake``, ``woke()`` — the Producer's own follow-up — runs before the lock is released.
Anything else — the lock is held by
the I/O thread, a check fails, the record is not plain — goes, unchanged, to the Producer's
general path (``gate``'s ``general``), which waits for the lock and does it all in Python.

Two twins, chosen once with the accelerator (``kpd.accel``): ``kpd._accel.Appender`` in C
when it is built, else ``AppenderPython`` below, which is the specification: equal outputs,
frames and memo on the same inputs (tests/unit/client/test_appender.py). The C one does the
whole record — murmur2, memo, column appends, the future — without a Python-level step.

Not thread-safe: the session's adapter serialises. Must not import sockets, threads or
asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

from kpd.accel import native
from kpd.future import RecordFuture
from kpd.murmur2 import murmur2

__all__ = ["Appender", "AppenderPython"]


class AppenderPython:
    """Appends plain records to the open frames of ``entries`` (``TopicTable.entries``);
    hands every other record to ``general(topic, key, value, partition, timestamp, headers)``.

    ``batch_limit``: a frame is sealed at this size (the record that reaches it takes the
    general path, which seals); ``sticky_limit``: bytes a keyless sticky run takes before it
    moves (the partitioner's); ``memo_limit``: the key memo is cleared at this many keys
    (``partitioner.KEY_MEMO_SIZE``).
    """

    __slots__ = (
        "batch_limit",
        "buffer_limit",
        "entries",
        "general",
        "link",
        "lock",
        "memo_limit",
        "opener",
        "send_general",
        "session",
        "sticky_limit",
        "woke",
    )

    def __init__(
        self,
        entries: dict,
        batch_limit: int,
        sticky_limit: int,
        memo_limit: int,
        general,
        opener=None,
    ) -> None:
        self.entries = entries
        self.batch_limit = batch_limit
        self.sticky_limit = sticky_limit
        self.memo_limit = memo_limit
        self.general = general
        self.opener = opener
        self.lock = self.session = self.link = self.send_general = self.woke = None
        self.buffer_limit = 0

    def gate(self, lock, session, link, buffer_limit: int, general, woke) -> None:
        """Make ``send`` usable: the Producer's ``lock`` (acquire/release), its ``session``
        (``taking``, ``buffered_bytes``), its ``link`` (``connected``), the buffer bound, and
        ``general(topic, value, key, partition, timestamp_ms, headers)``, its own path, and
        ``woke()``, what it does when an add raised the session's ``wake``."""
        self.lock, self.session, self.link = lock, session, link
        self.buffer_limit, self.send_general, self.woke = buffer_limit, general, woke

    def send(self, topic, value, key=None, partition=None, timestamp_ms=None, headers=None):
        """Producer.send: the record's RecordFuture, appended here under the lock, or
        whatever the Producer's general path returns (or raises)."""
        if timestamp_ms is None and not headers:
            lock = self.lock
            if lock.acquire(False):
                try:
                    session = self.session
                    if (
                        session.taking
                        and self.link.connected
                        and session.buffered_bytes <= self.buffer_limit
                    ):
                        future = self._plain(topic, key, value, partition)
                        if future is not None:
                            if session.wake:
                                self.woke()  # a frame opened: write it, or ring
                            return future
                finally:
                    lock.release()
        return self.send_general(topic, value, key, partition, timestamp_ms, headers)

    def add(self, topic, key, value, partition=None, timestamp=None, headers=None):
        """The record's RecordFuture: appended here, or whatever ``general`` returns."""
        if timestamp is None and not headers:
            future = self._plain(topic, key, value, partition)
            if future is not None:
                return future
        return self.general(topic, key, value, partition, timestamp, headers)

    def _plain(self, topic, key, value, partition):
        """The record's RecordFuture, or None (nothing changed): not a plain record."""
        if (type(key) is not bytes and key is not None) or (
            type(value) is not bytes and value is not None
        ):
            return None
        entry = self.entries.get(topic)
        if entry is None:
            return None
        data = (0 if key is None else len(key)) + (0 if value is None else len(value))
        placement = entry.placement
        sticky = False
        if partition is not None:
            if type(partition) is not int or partition < 0:
                return None
        elif key is not None:
            partition = entry.key_partitions.get(key)
            if partition is None:
                if placement is None:
                    return None
                # TopicPlacement.for_key: toPositive(murmur2(key)) % count, memoised.
                partition = (murmur2(key) & 0x7FFFFFFF) % placement.count
                memo = placement.keys
                if len(memo) >= self.memo_limit:
                    memo.clear()
                memo[key] = partition
        elif placement is None:
            partition = -1  # kpd keeps a keyless frame on one partition
        else:
            partition = placement.sticky
            if not 0 <= partition < placement.count or placement.sticky_bytes >= self.sticky_limit:
                return None  # the run moves: Partitioner.sticky picks the next one
            sticky = True
        frame = entry.open_frames.get(partition)
        if frame is None:
            if self.opener is None:
                return None
            frame = self.opener(entry, partition)
        size = frame.size + frame.per_record + data
        if size >= self.batch_limit:
            return None
        if sticky:
            placement.sticky_bytes += data  # Partitioner.sticky: the run took these bytes
        keys = frame.keys
        future = RecordFuture(frame, len(keys))
        keys.append(key)
        frame.values.append(value)
        frame.size = size
        return future


Appender = native.Appender if native is not None else AppenderPython
