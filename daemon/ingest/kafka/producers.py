"""Idempotent producers of the Kafka listener: kpd's producer ids, sequence checks, and the
dedupe state that survives a kill -9 of ingest or of the whole daemon.

kpd poses as the broker, so it hands out producer ids and epochs (InitProducerId) and checks
each batch's sequence per (producer id, topic, partition) as a broker's ``ProducerStateManager``
does, keeping the last ``BATCHES_KEPT`` batches of each (Kafka keeps 5: a client has at most 5
requests in flight per partition with idempotence on):

* an older epoch                                    -> INVALID_PRODUCER_EPOCH (47)
* a newer epoch must start at sequence 0            -> else OUT_OF_ORDER_SEQUENCE_NUMBER (45)
* the same (base sequence, count) as a kept batch   -> a duplicate: answered with that batch's
  first outcome (waiting for it if the first is still in flight), never produced again
* the next sequence (wrapping at 2**31-1, like ``DefaultRecordBatch.incrementSequence``)
                                                    -> a new batch
* anything else                                     -> OUT_OF_ORDER_SEQUENCE_NUMBER (45)
* a producer id kpd never issued                    -> UNKNOWN_PRODUCER_ID (59)

Expiry: every InitProducerId of a new client process hands out a new id, so ids are forgotten
when idle, as a broker forgets them after ``producer.id.expiration.ms``: an id that never had a
batch kept after ``UNUSED_ID_EXPIRY_S`` (a process that initialised and left, or kept the id
for nothing), any other after ``IDLE_ID_EXPIRY_S`` (Kafka's default of one day). A batch of a
forgotten id is answered UNKNOWN_PRODUCER_ID, on which clients ask for a new id. Ids are never
issued twice (the next id is kept in the file).

Durability: an append-only file of JSON lines beside the ring files. A batch's line is written
after its ring entry is published and before the client hears an answer; its outcome's line
when the outcome is known. A torn last line (kill -9 mid-write) is ignored on load; at load,
and whenever the file holds ``COMPACT_RATIO`` times more lines than the live state needs, it
is rewritten compacted (tmp + rename). Page-cache writes survive any process crash, as the
ring files do; what survives a power loss is the ring files' fsync choice, not made here.

Owned by the listener on ingest's event loop; no locks. Must not import the listener.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.kafka.errors import ErrorCode
from daemon.kafka.records import increment_sequence

__all__ = [
    "BATCHES_KEPT",
    "IDLE_ID_EXPIRY_S",
    "UNUSED_ID_EXPIRY_S",
    "KeptBatch",
    "ProducerRegistry",
    "SequenceCheck",
]

BATCHES_KEPT = 5
# A client asks for its id right before producing; one unused this long was left behind.
UNUSED_ID_EXPIRY_S = 600.0
IDLE_ID_EXPIRY_S = 86_400.0  # Kafka's producer.id.expiration.ms default
_EXPIRY_SCAN_S = 60.0  # look for expired ids at most this often (a scan of every id)
COMPACT_RATIO = 4  # rewrite the file once it has this many times the live state's lines
_COMPACT_MIN_LINES = 10_000  # ... and at least this many
_MAX_EPOCH = 0x7FFF  # Kafka bumps to a new producer id when the epoch would pass Short.MAX


@dataclass(slots=True)
class KeptBatch:
    """A batch kpd accepted into a ring, and its first outcome once known."""

    base_sequence: int
    count: int
    ring_seq: int  # the kpd sequence number of its first record in the ring entries
    # The outcome: None while unknown; else (error code, base offset, log-append time).
    outcome: tuple[int, int, int] | None = None


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    batches: list[KeptBatch] = field(default_factory=list)  # oldest first, <= BATCHES_KEPT


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """``error`` non-zero: refuse the batch with it; ``duplicate`` set: answer its outcome;
    else the batch is new."""

    error: int = 0
    duplicate: KeptBatch | None = None


_NEW = SequenceCheck()


class ProducerRegistry:
    """Producer ids, epochs and kept batches; persisted to ``path`` (None: memory only)."""

    def __init__(self, path: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._next_id = 1  # kpd's producer ids start at 1; 0 is never issued
        self._epochs: dict[int, int] = {}  # producer id -> current epoch
        self._last_used: dict[int, float] = {}  # producer id -> clock() of its last use
        self._keys: dict[int, set[tuple[int, str, int]]] = {}  # producer id -> its states
        self._states: dict[tuple[int, str, int], _PartitionState] = {}
        self._by_ring_seq: dict[int, tuple[tuple[int, str, int], KeptBatch]] = {}
        self._next_scan = clock() + _EXPIRY_SCAN_S
        self._fd: int | None = None
        self._lines = 0  # lines in the file
        if path is not None:
            self._load(path)
            self._compact(path)

    # ---- InitProducerId --------------------------------------------------------------------

    def init_producer(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """A (producer id, epoch) for an InitProducerId request. A known id with its current
        epoch gets the epoch bumped (KIP-360) and its sequences reset; anything else a new id."""
        now = self._clock()
        if now >= self._next_scan:
            self.expire(now)
        if producer_id >= 0 and self._epochs.get(producer_id) == epoch and epoch < _MAX_EPOCH:
            epoch += 1
        else:
            producer_id, epoch = self._next_id, 0
            self._next_id += 1
        self._epochs[producer_id] = epoch
        self._last_used[producer_id] = now
        self._forget_states(producer_id)
        self._write({"pid": producer_id, "epoch": epoch})
        return producer_id, epoch

    def expire(self, now: float) -> int:
        """Forget the ids idle past their expiry (module docstring); how many."""
        self._next_scan = now + _EXPIRY_SCAN_S
        expired = [
            pid
            for pid, used in self._last_used.items()
            if now - used > (IDLE_ID_EXPIRY_S if self._keys.get(pid) else UNUSED_ID_EXPIRY_S)
        ]
        for pid in expired:
            self._drop(pid)
            self._write({"gone": pid})
        return len(expired)

    # ---- sequences -------------------------------------------------------------------------

    def check(self, producer_id: int, epoch: int, topic: str, partition: int,
              base_sequence: int, count: int) -> SequenceCheck:  # fmt: skip
        current = self._epochs.get(producer_id)
        if current is None:
            return SequenceCheck(ErrorCode.UNKNOWN_PRODUCER_ID)
        self._last_used[producer_id] = self._clock()
        if epoch < current:
            return SequenceCheck(ErrorCode.INVALID_PRODUCER_EPOCH)
        state = self._states.get((producer_id, topic, partition))
        if state is None or epoch > state.epoch:
            return (
                _NEW
                if base_sequence == 0
                else SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            )
        for kept in state.batches:
            if kept.base_sequence == base_sequence and kept.count == count:
                return SequenceCheck(duplicate=kept)
        if not state.batches:
            return (
                _NEW
                if base_sequence == 0
                else SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            )
        last = state.batches[-1]
        if base_sequence == increment_sequence(last.base_sequence, last.count):
            return _NEW
        return SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)

    def accepted(self, producer_id: int, epoch: int, topic: str, partition: int,
                 base_sequence: int, count: int, ring_seq: int) -> KeptBatch:  # fmt: skip
        """Remember a new batch, published to a ring. Written before the client's answer."""
        kept = self._keep(producer_id, epoch, topic, partition, base_sequence, count, ring_seq)
        self._write({"k": [producer_id, topic, partition], "e": epoch, "s": base_sequence,
                     "n": count, "r": ring_seq})  # fmt: skip
        return kept

    def resolved(self, ring_seq: int, error: int, base_offset: int, append_time: int) -> None:
        """The first outcome of the batch at ``ring_seq`` (no-op for batches not kept)."""
        found = self._by_ring_seq.get(ring_seq)
        if found is None or found[1].outcome is not None:
            return
        found[1].outcome = (error, base_offset, append_time)
        self._write({"r": ring_seq, "o": [error, base_offset, append_time]})

    def withdrawn(self, ring_seq: int) -> None:
        """The batch at ``ring_seq`` was never produced and is not in a ring (refused after
        the check, failed NOT_PERSISTED): its sequence is free again, if it was the last."""
        found = self._by_ring_seq.pop(ring_seq, None)
        if found is None:
            return
        key, kept = found
        state = self._states.get(key)
        if state is not None and state.batches and state.batches[-1] is kept:
            state.batches.pop()
        self._write({"r": ring_seq, "x": 1})

    def _drop(self, producer_id: int) -> None:
        self._forget_states(producer_id)
        self._epochs.pop(producer_id, None)
        self._last_used.pop(producer_id, None)

    def stats(self) -> tuple[int, int]:
        """(producer ids known, (producer, partition) states kept)."""
        return len(self._epochs), len(self._states)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---- state -----------------------------------------------------------------------------

    def _keep(self, producer_id, epoch, topic, partition, base_sequence, count, ring_seq):
        key = (producer_id, topic, partition)
        state = self._states.get(key)
        if state is None or epoch > state.epoch:
            if state is not None:
                self._forget(key)
            state = self._states[key] = _PartitionState(epoch)
            self._keys.setdefault(producer_id, set()).add(key)
        kept = KeptBatch(base_sequence, count, ring_seq)
        state.batches.append(kept)
        self._by_ring_seq[ring_seq] = (key, kept)
        if len(state.batches) > BATCHES_KEPT:
            old = state.batches.pop(0)
            self._by_ring_seq.pop(old.ring_seq, None)
        return kept

    def _forget(self, key) -> None:
        state = self._states.pop(key)
        for kept in state.batches:
            self._by_ring_seq.pop(kept.ring_seq, None)
        keys = self._keys.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[key[0]]

    def _forget_states(self, producer_id: int) -> None:
        for key in list(self._keys.get(producer_id, ())):
            self._forget(key)

    # ---- the file --------------------------------------------------------------------------

    def _write(self, line: dict) -> None:
        if self._fd is None:
            return
        os.write(self._fd, json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self._lines += 1
        if self._lines > _COMPACT_MIN_LINES and self._lines > COMPACT_RATIO * self._live_lines():
            os.close(self._fd)
            self._fd = None
            self._compact(self._path)

    def _live_lines(self) -> int:
        """Lines a compacted file holds: an id's, a kept batch's and its outcome's."""
        return len(self._epochs) + 2 * len(self._by_ring_seq) + 1

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return
        for raw in data.split(b"\n"):
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a torn last line of a killed writer
            self._replay(line)

    def _replay(self, line: dict) -> None:
        if "pid" in line:
            pid, epoch = line["pid"], line["epoch"]
            self._epochs[pid] = epoch
            self._last_used[pid] = self._clock()  # a fresh idle period after a restart
            self._next_id = max(self._next_id, pid + 1)
            self._forget_states(pid)
        elif "gone" in line:
            self._drop(line["gone"])
        elif "next" in line:
            self._next_id = max(self._next_id, line["next"])
        elif "k" in line:
            pid, topic, partition = line["k"]
            self._keep(pid, line["e"], topic, partition, line["s"], line["n"], line["r"])
        elif "o" in line:
            found = self._by_ring_seq.get(line["r"])
            if found is not None and found[1].outcome is None:
                found[1].outcome = tuple(line["o"])
        elif "x" in line:
            self.withdrawn(line["r"])  # the file is not open yet while loading: no write

    def highest_ring_seq(self) -> int:
        """The largest kpd sequence number a kept batch uses (0 if none)."""
        return max(
            (kept.ring_seq + kept.count for _, kept in self._by_ring_seq.values()), default=0
        )

    def _compact(self, path: str) -> None:
        lines = [{"next": self._next_id}]
        lines += [{"pid": pid, "epoch": epoch} for pid, epoch in self._epochs.items()]
        for (pid, topic, partition), state in self._states.items():
            for kept in state.batches:
                key = [pid, topic, partition]
                lines.append({"k": key, "e": state.epoch, "s": kept.base_sequence,
                              "n": kept.count, "r": kept.ring_seq})  # fmt: skip
                if kept.outcome is not None:
                    lines.append({"r": kept.ring_seq, "o": list(kept.outcome)})
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as file:
            file.writelines(
                json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines
            )
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(lines)
