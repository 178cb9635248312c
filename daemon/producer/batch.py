"""One producer batch: the records of one partition sent and acknowledged together.

A batch is *open* while records are appended, *sealed* when it is full or lingered long enough,
*built* (compressed, stamped, CRC'd) on its first drain, and then keeps its bytes across retries
so a retry resends exactly what was sent before — which is what lets the broker deduplicate it
by sequence number. Only a new producer epoch re-stamps it (KIP-360).

Owned by the engine's event loop; no locking.
"""

from __future__ import annotations

from typing import Any

from daemon.kafka.records import BatchBuilder, restamp

__all__ = ["ProducerBatch"]


class ProducerBatch:
    __slots__ = (
        "appended",
        "attempts",
        "base_sequence",
        "buffer_bytes",
        "builder",
        "created",
        "due_now",
        "in_doubt",
        "order",
        "partition",
        "payload",
        "producer_epoch",
        "producer_id",
        "retry_at",
        "sealed",
        "sent_at",
        "tokens",
        "topic",
        "transaction",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        builder: BatchBuilder,
        created: float,
        appended: float | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: BatchBuilder | None = builder
        self.tokens: list[Any] = []
        self.buffer_bytes = 0  # what this batch holds of buffer.memory, returned on completion
        # Loop time its linger and delivery timeout count from: the first append, or earlier
        # when its first record waited in a ring (ProducerEngine.accepted_at).
        self.created = created
        self.appended = created if appended is None else appended  # the stage trace's "batch"
        self.sealed = False
        # Sendable without waiting for linger, but still open: records appended before it is
        # drained join it (its source batched them already: ``Accumulator.send_now``).
        self.due_now = False
        self.payload: bytearray | None = None  # built bytes, set on first drain
        self.attempts = 0  # produce requests that carried this batch
        self.sent_at = 0.0
        self.retry_at = 0.0  # not drained again before this loop time (retry backoff)
        # True once a request carrying the batch was written and then failed without a clear
        # answer (timeout, disconnect): the broker may have appended it.
        self.in_doubt = False
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1  # -1: no sequence assigned yet
        self.order = -1  # per-partition drain order, fixed at first drain: retries keep it
        self.transaction = -1  # exactly-once: number of the transaction it was sent in

    @property
    def record_count(self) -> int:
        return len(self.tokens)

    @property
    def size_in_bytes(self) -> int:
        if self.payload is not None:
            return len(self.payload)
        assert self.builder is not None
        return self.builder.size_in_bytes

    def build(self, producer_id: int, producer_epoch: int, base_sequence: int) -> bytearray:
        """Bytes to send; built once, re-stamped only when the producer identity changed."""
        if self.payload is None:
            self.payload = self.builder.build(producer_id, producer_epoch, base_sequence)
            self.builder = None  # the records now live in the payload only
        elif (producer_id, producer_epoch, base_sequence) != (
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
        ):
            # A copy, restamped: the bytes sent before are never changed in place (a large
            # request's batches are written as they are and may still sit in a transport's
            # buffer: ``BrokerConnection._write``). A new epoch is rare; this copy is cheap.
            self.payload = bytearray(self.payload)
            restamp(self.payload, producer_id, producer_epoch, base_sequence)
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.sealed = True
        return self.payload
