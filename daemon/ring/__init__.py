"""Shared-memory single-producer single-consumer byte rings and their eventfd wake-ups.

The package knows bytes, not Kafka, and must not import multiprocessing, uvloop, signal or
prometheus_client (the process layer owns those). Pieces:

* ``region``     -- the ``/dev/shm`` file, its header layout and lifecycle (``Ring``,
  ``remove_stale``);
* ``shm_ring``   -- the entry format and the two ends (``RingProducer``, ``RingConsumer``);
* ``wakeup``     -- eventfd doorbells and the announce-then-sleep protocol;
* ``ack_window`` -- commit on ack: out-of-order completions to a contiguous release point.

Typical wiring: the supervisor calls ``remove_stale(prefix)``, then ``Ring.create`` and
``RingWakeups.create`` per ring, and passes the ring name and ``wakeups.fds()`` to each child
(``pass_fds``). A child calls ``Ring.attach`` and ``RingWakeups.from_fds`` and builds the end
it owns. On exit the supervisor calls ``Ring.unlink``.

Memory ordering: the protocol needs the consumer to see an entry's bytes once it sees the
``write_pos`` that covers them, and the producer to overwrite bytes only after the consumer's
reads of them are done. ``ordering`` decides how the shared indices are accessed: C11 atomics
from the accelerator (any CPU, arm64 included), or plain loads and stores on x86-64 (TSO) only;
on a weakly-ordered CPU without the accelerator it refuses (``MemoryOrderingError``).
"""

from daemon.ring.ack_window import AckWindow
from daemon.ring.ordering import MemoryOrderingError, ordering_of
from daemon.ring.region import (
    EntryTooLargeError,
    Ring,
    RingError,
    RingFormatError,
    remove_stale,
)
from daemon.ring.shm_ring import RingConsumer, RingProducer, entry_size, max_payload
from daemon.ring.wakeup import EventFd, RingWakeups

__all__ = [
    "AckWindow",
    "EntryTooLargeError",
    "EventFd",
    "MemoryOrderingError",
    "Ring",
    "RingConsumer",
    "RingError",
    "RingFormatError",
    "RingProducer",
    "RingWakeups",
    "entry_size",
    "max_payload",
    "ordering_of",
    "remove_stale",
]
