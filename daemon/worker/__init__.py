"""One worker process's ring ⇄ engine adapter: records ring in, producer engine to Kafka,
reports ring out.

* ``worker``  -- ``Worker``: reads ring entries, appends their records to its
  ``ProducerEngine``, releases ring space on ack (commit on ack), keeps what is undelivered
  at shutdown;
* ``reports`` -- batch outcomes as report runs, grouped into reports-ring entries (pure);
* ``done_journal`` -- the memory-mapped file beside the records ring that says which records
  of unreleased entries already have their outcome, so a kill -9 never produces them again.

Imports the engine (``producer``), the rings, the ring-entry format (``wire``) and the
per-topic delivery tally (``metrics``); never ingest, the supervisor, uvloop or signal
handling: ``process.child`` runs it in a process.
"""

from daemon.worker.worker import Worker

__all__ = ["Worker"]
