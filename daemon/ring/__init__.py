"""Shared-memory single-producer single-consumer byte rings and their eventfd wake-ups.

The package knows bytes, not Kafka, and must not import multiprocessing, uvloop, signal or
prometheus_client (the process layer owns those). Pieces:

* ``region``     -- the ring file, its header layout and lifecycle (``Ring``, ``RingLabels``);
* ``file_ring``   -- the entry format and the two ends (``RingProducer``, ``RingConsumer``),
  and ``recover``/``sealed_entries`` for a ring file left by a previous daemon;
* ``wakeup``     -- eventfd doorbells and the announce-then-sleep protocol;
* ``ack_window`` -- commit on ack: out-of-order completions to a contiguous release point.

Typical wiring: the supervisor adopts the ring files a previous daemon left (``Ring.attach``,
``recover``) or makes new ones (``Ring.create``), creates ``RingWakeups`` per ring, and passes
the ring path and ``wakeups.fds()`` to each child (``pass_fds``). A child calls
``Ring.attach`` and ``RingWakeups.from_fds`` and builds the end it owns. The files stay when
the daemon exits: what was never released is produced by the next one.

Memory ordering: the protocol needs the consumer to see an entry's bytes once it sees the
``write_pos`` that covers them, and the producer to overwrite bytes only after the consumer's
reads of them are done. ``ordering`` decides how the shared indices are accessed: C11 atomics
from the accelerator (any CPU, arm64 included), or plain loads and stores on x86-64 (TSO) only;
on a weakly-ordered CPU without the accelerator it refuses (``MemoryOrderingError``).
"""

from daemon.ring.ack_window import AckWindow
from daemon.ring.file_ring import (
    Recovery,
    RingConsumer,
    RingProducer,
    entry_size,
    max_payload,
    recover,
    sealed_entries,
)
from daemon.ring.ordering import MemoryOrderingError, ordering_of
from daemon.ring.region import (
    LAYOUT_VERSION,
    EntryTooLargeError,
    Ring,
    RingError,
    RingFormatError,
    RingLabels,
)
from daemon.ring.wakeup import EventFd, RingWakeups

__all__ = [
    "LAYOUT_VERSION",
    "AckWindow",
    "EntryTooLargeError",
    "EventFd",
    "MemoryOrderingError",
    "Recovery",
    "Ring",
    "RingConsumer",
    "RingError",
    "RingFormatError",
    "RingLabels",
    "RingProducer",
    "RingWakeups",
    "entry_size",
    "max_payload",
    "ordering_of",
    "recover",
    "sealed_entries",
]
