"""kpd's benchmark: kpd end to end and its engine against confluent-kafka, kcat, rsyslog and
aiokafka, same records, same run, each against a freshly started tansu.

Modules: workloads (what is produced, and the record ids that make delivery checkable),
contenders (who produces it: a registry plus one module per kind of client, run in child
processes by child), plan (which contenders run on which workload, how often: the default
run, the quick run, the command line's narrowing), runner (one measured run: broker, kpd
daemon, children, /proc readings per process, verification), verify (reading the topic
back), pacing (the paced runs' schedule and latency percentiles), stages (the daemon's
per-record stage trace read from /metrics), report (medians, tables, RESULTS.md), targets
(issues 11's and 18's targets, met or missed), profile (py-spy), cli; daemon_cpu is a tool
of its own (kpd's CPU per process, fed by a raw socket writer).

Extending: a new row is a ``Contender`` in bench.contenders (a kpd variant is often only
``options`` for its child module, or ``service_settings`` for its daemon, e.g.
``{"rings": {"fsync": "always"}}``) plus its name in a step of bench.plan's default plan; a
new target is a row in bench.targets. ``python -m bench --contenders NAME --records 20000
--runs 1`` tries it alone.

Imports of client libraries happen only inside contender children and the verifier, so the
parent's own CPU and memory never mix with a contender's.
"""
