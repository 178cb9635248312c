// A kafkajs producer for kpd's Kafka listener (tests/integration/test_kafka_listener_clients.py).
//
// Usage: node kafkajs_producer.js '<json>' with {bootstrap, topic, count, keys, acks,
// idempotent, chunk, gzip}. Sends values "v<i>" with keys "k<i % keys>", `chunk` records per
// producer.send() awaited in turn. After each send it prints one JSON line:
// {"sent": <records sent so far>, "reports": [[i, partition, offset], ...]}, the offset being
// where kafkajs says record i is (the partition's base offset plus its place in the batch;
// -1 when there is none: acks=0 has no answer, and kpd answers acks=1 before Kafka does,
// with base offset -1). Exits 1 with the error on stderr if a send fails.
// kafkajs itself comes from NODE_PATH (installed by the test, never into the repository).
"use strict";

const { CompressionTypes, Kafka, Partitioners, logLevel } = require("kafkajs");

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const kafka = new Kafka({
    clientId: "kpd-kafkajs-test",
    brokers: [cfg.bootstrap],
    // Warnings and errors (retries after a kill) go to stderr: stdout carries the reports.
    logLevel: logLevel.WARN,
    logCreator: () => ({ label, log }) =>
      process.stderr.write(`${label} ${log.message} ${JSON.stringify(log)}\n`),
    // A killed ingest is replaced within a second or two; keep retrying until then.
    retry: { initialRetryTime: 100, retries: 30, maxRetryTime: 2000 },
  });
  // kafkajs' default partitioner (murmur2 of the key, as the Java client), watched so that
  // each record's partition is known: a send's answer gives one base offset per partition.
  const inner = Partitioners.DefaultPartitioner();
  const partitionOf = new Map();
  const createPartitioner = () => (args) => {
    const partition = inner(args);
    partitionOf.set(args.message.value, partition);
    return partition;
  };
  const producer = kafka.producer({
    idempotent: cfg.idempotent,
    maxInFlightRequests: cfg.idempotent ? 1 : undefined,
    createPartitioner,
  });
  await producer.connect();
  for (let first = 0; first < cfg.count; first += cfg.chunk) {
    const indexes = [];
    for (let i = first; i < Math.min(first + cfg.chunk, cfg.count); i++) indexes.push(i);
    const messages = indexes.map((i) => ({ key: `k${i % cfg.keys}`, value: `v${i}` }));
    const compression = cfg.gzip ? CompressionTypes.GZIP : CompressionTypes.None;
    const answer = await producer.send({ topic: cfg.topic, acks: cfg.acks, compression, messages });
    const base = new Map(answer.map((m) => [m.partition, Number(m.baseOffset)]));
    const placed = new Map(); // partition -> records of this send placed so far
    const reports = indexes.map((i, n) => {
      const partition = partitionOf.get(messages[n].value);
      const place = placed.get(partition) || 0;
      placed.set(partition, place + 1);
      const offset = base.has(partition) ? base.get(partition) : -1;
      return [i, partition, offset < 0 ? -1 : offset + place];
    });
    process.stdout.write(JSON.stringify({ sent: first + indexes.length, reports }) + "\n");
  }
  await producer.disconnect();
}

main().catch((error) => {
  process.stderr.write(`kafkajs failed: ${error.stack || error}\n`);
  process.exit(1);
});
