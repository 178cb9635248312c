"""The paced librdkafka sender rides out a full local queue as a real app does.

Real librdkafka (confluent-kafka) on the suite's librdkafka mock cluster, its local queue cut
to a few records so that ``produce`` raises BufferError at once: the sender polls and retries,
counts each wait, and every record is delivered (issue 20: the 100k/s rows used to fail).
"""

from __future__ import annotations

import io
import json

from bench.child import ChildSpec, Session
from bench.contenders import confluent_producer
from bench.workloads import Workload, make_records


def test_a_full_local_queue_is_waited_out_counted_and_every_record_delivered(mock_cluster):
    topic = mock_cluster.create_topic("bench-paced-queue-full", 3)
    workload = Workload("a", "paced", records=2_000, partitions=3, linger_ms=5)
    spec = ChildSpec("confluent-kafka@test", "bench.contenders.confluent_producer",
                     mock_cluster.bootstrap, topic, workload,
                     options={"rate": 100_000, "burst": 100,
                              "producer_config": {"queue.buffering.max.messages": 20}})  # fmt: skip
    channel = io.StringIO()
    session = Session(spec, make_records(workload), channel, io.StringIO("go\nexit\n"))

    confluent_producer.main(session)

    done = [json.loads(line) for line in channel.getvalue().splitlines()][-1]
    assert done["event"] == "done"
    assert (done["delivered"], done["failed"]) == (2_000, 0)
    assert done["latency"]["queue_full_waits"] > 0
    assert done["latency"]["completed"] == 2_000
