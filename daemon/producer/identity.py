"""The idempotent producer's identity: producer id and epoch (KIP-98, KIP-360).

Owns the current (producer_id, epoch) and how to get or bump it with InitProducerId. With
idempotence off the identity stays (-1, -1) and batches carry no sequence numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.net.connection import BrokerConnection
from daemon.protocol import messages
from daemon.protocol.errors import error_name

__all__ = ["NO_PRODUCER_ID", "ProducerIdentity", "ProducerIdError"]

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
        """Get a producer id, or bump the epoch of the one we have.

        KIP-360: from InitProducerId v3 a producer that sends its current id and epoch keeps
        the id and gets epoch + 1, which fences its own old in-flight batches. Older brokers
        only hand out a fresh id, which has the same effect on sequence numbers.
        """
        version = conn.version_for(messages.INIT_PRODUCER_ID)
        bump = self.known and version >= 3
        body = {
            "transactional_id": None,
            "transaction_timeout_ms": transaction_timeout_ms,
            "producer_id": self.producer_id if bump else NO_PRODUCER_ID,
            "producer_epoch": self.epoch if bump else -1,
        }
        response = await conn.request(messages.INIT_PRODUCER_ID, body, version=version)
        assert response is not None
        code = response["error_code"]
        if code:
            raise ProducerIdError(code, f"InitProducerId failed: {error_name(code)}")
        self.producer_id = response["producer_id"]
        self.epoch = response["producer_epoch"]
