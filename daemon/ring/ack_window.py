"""Commit on ack: turn completions in any order into the ring's contiguous release point.

A worker reads entries in ring order but Kafka acknowledges them per partition batch, in any
order across partitions. Ring space may only be released up to the first entry that is not
done yet, or a crash would lose the entries behind it. This module owns that bookkeeping, in
ring positions only; it knows nothing of Kafka and imports nothing of the process layer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["AckWindow"]


class AckWindow:
    """The entries read and not yet released, and which of them are done.

    Owned by the consumer's process. ``done`` means acknowledged by Kafka, or finally failed
    and reported: either way the entry needs no replay.
    """

    def __init__(self, start: int) -> None:
        self._in_flight: deque[int] = deque()  # end positions in ring order
        self._done: set[int] = set()  # end positions done ahead of an older in-flight one
        self.release_pos = start  # everything before it is done

    def __len__(self) -> int:
        return len(self._in_flight)

    def track(self, end_pos: int) -> None:
        """Record an entry just read; ``end_pos`` values must arrive in ring order."""
        last = self._in_flight[-1] if self._in_flight else self.release_pos
        if end_pos <= last:
            raise ValueError(f"end position {end_pos} is not after {last}")
        self._in_flight.append(end_pos)

    def done(self, end_positions: Iterable[int]) -> int | None:
        """Mark entries done; return the new release position if it moved, else None."""
        self._done.update(end_positions)
        in_flight, done = self._in_flight, self._done
        moved = None
        while in_flight and in_flight[0] in done:
            moved = in_flight.popleft()
            done.discard(moved)
        if moved is None:
            return None
        self.release_pos = moved
        return moved
