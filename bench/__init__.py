"""kpd's benchmark: its producer engine against aiokafka and confluent-kafka, same records,
same run, each against a freshly started tansu.

Modules: workloads (what is produced, and the record ids that make delivery checkable),
contenders (who produces it: a registry plus one module each, run in child processes by
child), runner (one measured run: broker, children, /proc readings, verification), verify
(reading the topic back), report (medians, tables, RESULTS.md), profile (py-spy), cli.

Imports of client libraries happen only inside contender children and the verifier, so the
parent's own CPU and memory never mix with a contender's.
"""
