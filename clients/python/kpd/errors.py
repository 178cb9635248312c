"""What a send() future resolves to: a record's metadata, or a DeliveryError.

Owns the client's result and error values. Pure data; imports only the protocol's shared
vocabulary (``kpd.protocol.base``) and nothing with I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from kpd.protocol.base import KpdErrorCode, Persistence, error_code, is_retriable

__all__ = [
    "CONNECTION_LOST",
    "DeliveryError",
    "KpdConnectionError",
    "RecordMetadata",
    "TopicError",
]

# Not a kpd wire code (those are u16, so -1 can never collide): the connection ended before
# kpd reported the record. Retriable like Kafka's NetworkException, but check ``persistence``:
# a record that was sent may already be in Kafka.
CONNECTION_LOST = -1


class RecordMetadata(NamedTuple):
    """Where a record landed. ``offset`` is -1 until Kafka acknowledged it (acks "none" or
    "accepted"); ``partition`` is -1 when kpd chose it and never reported it (acks "none").
    ``timestamp`` is the broker's LogAppendTime, else the record's CreateTime: the timestamp it
    was sent with, or the one kpd gave it. -1 until Kafka acknowledged it, and for a record
    sent without a timestamp in a frame whose other records had one."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class DeliveryError(Exception):
    """A record that was not delivered, and whether it may be in Kafka anyway.

    ``code`` is a kpd error code (``KpdErrorCode``, or a bare int for codes newer than this
    client, or CONNECTION_LOST); ``kafka_error`` is Kafka's own code when ``code`` is
    KAFKA_ERROR; ``persistence`` says whether resending may duplicate the record.
    """

    def __init__(
        self,
        code: KpdErrorCode | int,
        kafka_error: int,
        persistence: Persistence,
        message: str,
    ) -> None:
        super().__init__(code, kafka_error, persistence, message)
        self.code = error_code(code) if code >= 0 else code
        self.kafka_error = kafka_error
        self.persistence = Persistence(persistence)
        self.message = message

    @property
    def retriable(self) -> bool:
        """True if sending the same record again, unchanged, may succeed."""
        return self.code == CONNECTION_LOST or is_retriable(self.code)

    def __str__(self) -> str:
        name = getattr(self.code, "name", None) or (
            "CONNECTION_LOST" if self.code == CONNECTION_LOST else f"error {self.code}"
        )
        if self.kafka_error:  # Kafka's own error by number (kpd's message names it)
            name = f"{name} (Kafka error {self.kafka_error})"
        return f"{name} [{self.persistence.name}]: {self.message}"


class KpdConnectionError(ConnectionError):
    """kpd refused the connection (ERROR during the handshake) or broke the protocol.

    A ConnectionError, hence an OSError: callers that handle "cannot connect" catch both.
    """

    def __init__(self, code: KpdErrorCode | int, message: str) -> None:
        super().__init__(f"{getattr(code, 'name', code)}: {message}")
        self.code = code
        self.message = message


class TopicError(Exception):
    """kpd cannot take records for ``topic``: ``code`` is UNKNOWN_TOPIC, TOPIC_NOT_ALLOWED, ..."""

    def __init__(self, topic: str, code: KpdErrorCode | int) -> None:
        super().__init__(f"topic {topic!r}: {getattr(code, 'name', code)}")
        self.topic = topic
        self.code = code
