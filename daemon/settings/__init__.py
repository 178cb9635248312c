"""The configuration schema, loader and reference of kpd, split by concern.

``daemon.config`` is the import point; the modules here are its parts:

* ``values``    — value types: how one YAML value is checked and converted (pure).
* ``model``     — the frozen settings dataclasses the rest of kpd receives.
* ``schema``    — the one table of settings (path, type, default, doc) and the Kafka
                  producer keys kpd rejects on purpose.
* ``loader``    — YAML reading, the one loader and the one ``finalize`` step.
* ``reference`` — ``docs/configuration.md`` and ``config/kpd.example.yaml``, rendered from
                  the schema.

Nothing here logs, touches the network or imports anything but the stdlib and PyYAML.
"""
