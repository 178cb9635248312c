"""The ring-entry format: the entries ingest and workers exchange through their rings (see
``ring_entry``). Pure: bytes <-> values, no I/O, no clock, no logging.

The kpd socket protocol, which this package held too, is kpd-client's: ``kpd.protocol``
(clients/python/kpd/protocol/), imported from there by the client and by the daemon alike.

Must not import kpd modules outside ``daemon.wire``, ``daemon.kafka`` and ``kpd.protocol``.
"""
