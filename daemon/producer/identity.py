"""The idempotent producer's identity: producer id and epoch (KIP-98, KIP-360).

Owns the current (producer_id, epoch) and how to get or bump it with InitProducerId. With
idempotence off the identity stays (-1, -1) and batches carry no sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.kafka import messages
from daemon.kafka.errors import error_name
from daemon.net.connection import BrokerConnection

__all__ = ["NO_PRODUCER_ID", "ProducerIdError", "ProducerIdentity"]

NO_PRODUCER_ID = -1


class ProducerIdError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class ProducerIdentity:
    producer_id: int = NO_PRODUCER_ID
    epoch: int = -1

    @property
    def known(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID

    async def initialize(self, conn: BrokerConnection, transaction_timeout_ms: int) -> None:
        """Get a producer id: the first one, or a fresh one that replaces the current id.

        An idempotent producer has no transactional id, and for those a broker hands out a new
        id whatever id and epoch the request carries (Kafka's TransactionCoordinator
        .handleInitProducerId: "if the transactional id is null, then always blindly accept
        the request and return a new producerId"); librdkafka's mock rejects a non-null id with
        INVALID_PRODUCER_ID_MAPPING. So a KIP-360 "bump" asks for a fresh id with (-1, -1), as
        librdkafka's idempotent producer does: a new id resets sequence numbers just as a new
        epoch would, and fences the old id's in-flight batches.
        """
        version = conn.version_for(messages.INIT_PRODUCER_ID)
        body = {
            "transactional_id": None,
            "transaction_timeout_ms": transaction_timeout_ms,
            "producer_id": NO_PRODUCER_ID,
            "producer_epoch": -1,
        }
        response = await conn.request(messages.INIT_PRODUCER_ID, body, version=version)
        assert response is not None
        code = response["error_code"]
        if code:
            raise ProducerIdError(code, f"InitProducerId failed: {error_name(code)}")
        self.producer_id = response["producer_id"]
        self.epoch = response["producer_epoch"]
