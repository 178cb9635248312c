"""What a running kpd says about itself: ``/status``, ``kpd status``, process titles.

* ``reporters`` -- each child's side: its reporter flushes its metrics and writes its JSON
  snapshot once a second from its own event loop;
* ``document``  -- the supervisor's side: the ``/status`` document, its child table merged
  with the children's snapshots;
* ``text``      -- ``kpd status``: fetch ``/status`` and print it for a person;
* ``titles``    -- process titles (``kpd: worker 0 [partitions demo 0-5]``) for ``ps``.

Must not import uvloop, signal or the supervisor.
"""
