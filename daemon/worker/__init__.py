"""One worker process's ring ⇄ engine adapter: records ring in, producer engine to Kafka,
reports ring out.

* ``worker``  -- ``Worker``: reads ring entries, appends their records to its
  ``ProducerEngine``, releases ring space on ack (commit on ack), keeps what is undelivered
  at shutdown;
* ``reports`` -- batch outcomes as report runs, grouped into reports-ring entries (pure).

Imports the engine (``producer``), the rings, the ring-entry format (``wire``) and the
per-topic delivery tally (``metrics``); never ingest, the supervisor, uvloop or signal
handling: ``process.child`` runs it in a process.
"""

from daemon.worker.worker import Worker

__all__ = ["Worker"]
