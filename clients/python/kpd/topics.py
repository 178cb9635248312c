"""The client's topic table: per topic, kpd's partition count, its placement, and when to ask.

Owns what the producer knows of each topic it sends to (``TopicEntry``): the partition count
kpd last answered (or its error), the ``TopicPlacement`` of the one partitioner, the open
frames per partition (filled by ``framer``), and the METADATA bookkeeping — which topics to
ask about, which requests are outstanding, when a count is refreshed (``metadata.max.age.ms``)
and how fast an error answer is asked again (a backoff doubling up to a cap, like Java's
``retry.backoff(.max).ms``). A keyed record of a topic whose count is unknown raises
``AwaitingMetadata``: the adapter waits (max.block.ms) and tries again.

Pure: time comes from the injected clock. Not thread-safe: the session's adapter serialises.
Must not import sockets, threads or asyncio.
"""

from __future__ import annotations

from collections.abc import Callable

from kpd.common import Outgoing
from kpd.errors import DeliveryError
from kpd.partitioner import Partitioner, TopicPlacement
from kpd.protocol import (
    MAX_METADATA_TOPICS,
    KpdErrorCode,
    Persistence,
    decode_metadata_response,
    encode_metadata_request,
    is_retriable,
)
from kpd.protocol.base import encode_string

__all__ = ["AwaitingMetadata", "TopicEntry", "TopicTable"]

# After an error answer (UNKNOWN_TOPIC: the topic may be created any moment) the topic is asked
# again after this backoff, doubling up to the cap, like Java's retry.backoff(.max).ms.
_ERROR_REFRESH_S = 0.1
_ERROR_REFRESH_MAX_S = 1.0


class AwaitingMetadata(Exception):
    """add() needs ``topic``'s partition count before it can place a keyed record; nothing was
    queued. The adapter waits until ``placement_ready(topic)`` (or max.block.ms passed, then
    ``metadata_timed_out``), and calls add() again — as Java's send() waits for metadata."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic


class TopicEntry:
    """Per-topic routing state. ``partitions`` is 0 while unknown: keyless records then go
    with partition -1 (kpd keeps them sticky per frame), keyed ones wait for the count."""

    __slots__ = (
        "answer",
        "encoded",
        "error_backoff",
        "key_partitions",
        "name",
        "open_frames",
        "partitions",
        "placement",
        "refresh_at",
        "requested",
        "waited_out",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.encoded = encode_string(name)  # as the PRODUCE head carries it
        self.partitions = 0
        self.placement: TopicPlacement | None = None  # set once the count is known
        # ``placement.keys``, read inline by add(): key -> its partition of ``partitions``.
        self.key_partitions: dict[bytes, int] = {}
        self.open_frames: dict = {}  # partition (or -1) -> the ProduceFrame filling now
        self.refresh_at = 0.0
        self.error_backoff = 0.0  # the next refresh delay after an error answer
        self.requested = False  # a METADATA_REQUEST naming this topic is outstanding
        self.answer: tuple[int, KpdErrorCode | int] | None = None  # the last (count, error)
        # Set when a wait for the count expired (max.block.ms): keyed records then fail at
        # once with this error until a count arrives, instead of each waiting again.
        self.waited_out: DeliveryError | None = None


class TopicTable:
    """Every topic of one producer (they outlive connections). ``wake()`` is called when a
    new topic needs a METADATA request soon."""

    def __init__(
        self,
        partitioner: Partitioner,
        max_age_s: float,
        clock: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self.partitioner = partitioner
        self._max_age_s = max_age_s
        self._clock = clock
        self._wake = wake
        self.entries: dict[str, TopicEntry] = {}
        self._wanted: dict[str, None] = {}  # topics to ask about (ordered set)
        self._inflight: dict[int, tuple[str, ...]] = {}  # request_id -> topics
        self._next_request_id = 0
        self.next_refresh = float("inf")

    def add(self, name: str) -> TopicEntry:
        """A topic seen for the first time: register it and ask kpd for its count."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic must be a non-empty str, not {name!r}")
        entry = TopicEntry(name)  # encodes the name: raises before anything is registered
        self.entries[name] = entry
        self._wanted[name] = None
        self._wake()
        return entry

    def key_partition(self, entry: TopicEntry, key: bytes) -> int:
        """The partition of a key that missed ``key_partitions``; raises AwaitingMetadata
        while the topic's count is unknown, DeliveryError if it will not come."""
        placement = entry.placement
        if placement is not None:
            return placement.for_key(key)
        answer = entry.answer
        if answer is not None and answer[1] and not is_retriable(answer[1]):
            raise DeliveryError(
                answer[1],
                0,
                Persistence.NOT_PERSISTED,
                f"topic {entry.name!r}: kpd answered {code_name(answer[1])} for its metadata",
            )
        if entry.waited_out is not None:
            error = entry.waited_out
            raise DeliveryError(error.code, 0, Persistence.NOT_PERSISTED, error.message)
        raise AwaitingMetadata(entry.name)

    def want(self, topics) -> None:
        """Ask about ``topics`` again (a report said their count may be stale: protocol §8)."""
        for topic in topics:
            self._wanted[topic] = None

    # --- requests and answers -----------------------------------------------------------------

    def requests(self) -> list[Outgoing]:
        """METADATA requests due now: new and wanted topics, and counts past their age."""
        if self._clock() >= self.next_refresh:
            self._mark_due()
        wanted = [t for t in self._wanted if not self.entries[t].requested]
        self._wanted.clear()
        out = []
        for start in range(0, len(wanted), MAX_METADATA_TOPICS):
            topics = tuple(wanted[start : start + MAX_METADATA_TOPICS])
            request_id = self._next_request_id
            self._next_request_id = (request_id + 1) & 0xFFFFFFFF
            self._inflight[request_id] = topics
            for topic in topics:
                self.entries[topic].requested = True
            out.append(Outgoing(encode_metadata_request(request_id, topics), -1, 0))
        return out

    def _mark_due(self) -> None:
        now = self._clock()
        self.next_refresh = float("inf")
        for entry in self.entries.values():
            if entry.refresh_at <= now:
                self._wanted[entry.name] = None
            else:
                self.next_refresh = min(self.next_refresh, entry.refresh_at)

    def on_response(self, payload) -> None:
        """A METADATA_RESPONSE: store each asked topic's count (or error) and its next ask."""
        response = decode_metadata_response(payload)
        topics = self._inflight.pop(response.request_id, ())
        now = self._clock()
        for answer in response.topics:
            entry = self.entries.get(answer.topic)
            if entry is None or answer.topic not in topics:
                continue
            entry.requested = False
            entry.answer = (answer.partitions, answer.error)
            if answer.error == KpdErrorCode.NONE and answer.partitions > 0:
                # The placement object stays the same; a new count clears its keys in place.
                entry.placement = self.partitioner.topic(entry.name, answer.partitions)
                entry.key_partitions = entry.placement.keys
                entry.partitions = answer.partitions
                entry.waited_out = None
                entry.error_backoff = 0.0
                entry.refresh_at = now + self._max_age_s
            else:
                # A count already known stays in use (kpd fails records with the precise
                # error if the topic is really gone); an unknown one is asked again soon, as
                # the topic may be created any moment and keyed senders may be waiting.
                entry.error_backoff = min(
                    max(2 * entry.error_backoff, _ERROR_REFRESH_S), _ERROR_REFRESH_MAX_S
                )
                entry.refresh_at = now + entry.error_backoff
            self.next_refresh = min(self.next_refresh, entry.refresh_at)

    def connection_ended(self) -> None:
        """Outstanding requests died with the connection: ask about every topic again on the
        next one (kpd may have restarted with other counts)."""
        self._inflight.clear()
        for entry in self.entries.values():
            entry.requested = False
            self._wanted[entry.name] = None

    # --- what the adapters ask ----------------------------------------------------------------

    def placement_ready(self, topic: str) -> bool:
        """True once a keyed record of ``topic`` can be placed or refused for good: its count
        is known, or kpd's answer is a final error."""
        entry = self.entries.get(topic)
        if entry is None or entry.placement is not None:
            return True
        answer = entry.answer
        return answer is not None and bool(answer[1]) and not is_retriable(answer[1])

    def metadata_timed_out(self, topic: str, waited_ms: float) -> DeliveryError:
        """A keyed send() waited ``waited_ms`` (max.block.ms) for ``topic``'s count in vain:
        the error for its record. Later keyed records fail at once with it until a count
        arrives; the topic keeps being asked meanwhile."""
        entry = self.entries[topic]
        answer = entry.answer
        if answer is not None and answer[1]:
            code = answer[1]
            detail = f"kpd answered {code_name(code)}"
        else:
            code = KpdErrorCode.DELIVERY_TIMEOUT
            detail = "kpd has not answered"
        error = DeliveryError(
            code,
            0,
            Persistence.NOT_PERSISTED,
            f"topic {topic!r} not present in metadata after {waited_ms:g} ms "
            f"(max.block.ms; {detail})",
        )
        if entry.placement is None:
            entry.waited_out = error
        return error

    def answer(self, topic: str) -> tuple[int, KpdErrorCode | int] | None:
        """kpd's last (partition count, error) for ``topic``; None until it has answered."""
        entry = self.entries.get(topic)
        return None if entry is None else entry.answer


def code_name(code: KpdErrorCode | int) -> str:
    return getattr(code, "name", None) or f"error {code}"
