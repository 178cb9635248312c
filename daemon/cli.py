"""The ``kpd`` command: run the daemon, check a config, send records from a shell.

Exit statuses follow sysexits: 78 (EX_CONFIG) for a bad config, 64 (EX_USAGE) for bad flags,
69 (EX_UNAVAILABLE) when the daemon's socket cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CONFIG = 78


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2; sysexits says 64
        self.print_usage(sys.stderr)
        sys.stderr.write(f"kpd: error: {message}\n")
        sys.exit(EX_USAGE)


def _load(path: str):
    from daemon.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"kpd: {exc.source}: invalid configuration:\n{exc}\n")
        sys.exit(EX_CONFIG)


def cmd_check_config(args) -> int:
    config = _load(args.config)
    for warning in config.warnings:
        print(f"warning: {warning}")
    print(f"{args.config}: OK ({config.workers.count} workers, socket {config.socket.path})")
    return 0


def cmd_run(args) -> int:
    import uvloop

    from daemon.process.supervisor import Supervisor

    config = _load(args.config)
    from daemon.process.logs import setup_logging

    setup_logging(config.log.level, config.log.format, "supervisor")
    for warning in config.warnings:
        logging.getLogger("kpd").warning("config: %s", warning)
    supervisor = Supervisor(config, args.config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(supervisor.run())


def cmd_send(args) -> int:
    from daemon.client import DeliveryError, Producer

    separator = args.key_separator.encode() if args.key_separator else None
    failed = 0
    try:
        producer = Producer(args.socket, acks=args.acks)
    except OSError as exc:
        sys.stderr.write(f"kpd: cannot connect to {args.socket}: {exc}\n")
        return EX_UNAVAILABLE
    futures = []
    with producer:
        for line in sys.stdin.buffer:
            line = line.rstrip(b"\n")
            key = None
            if separator is not None and separator in line:
                key, line = line.split(separator, 1)
            futures.append(producer.send(args.topic, line, key=key))
        producer.flush()
    for future in futures:
        try:
            future.result()
        except DeliveryError as exc:
            failed += 1
            if failed <= 10:
                sys.stderr.write(f"kpd: record failed: {exc}\n")
    print(f"sent {len(futures) - failed} records to {args.topic}, {failed} failed")
    return 1 if failed else 0


def _bootstrap_for_read(args) -> str:
    if args.bootstrap:
        return args.bootstrap
    from pathlib import Path

    from daemon.process.embedded import address_file

    config = _load(args.config)
    if not config.producer.embedded_broker:
        return ",".join(f"{host}:{port}" for host, port in config.producer.bootstrap_servers)
    path = address_file(Path(config.socket.path).parent)
    try:
        return path.read_text().strip()
    except OSError:
        sys.stderr.write(f"kpd: no embedded broker is running ({path} not found)\n")
        sys.exit(EX_UNAVAILABLE)


def cmd_read(args) -> int:
    """Print the records of a topic (development aid; needs the `tools` extra)."""
    try:
        from confluent_kafka import Consumer, KafkaError, TopicPartition
    except ImportError:
        sys.stderr.write("kpd: `kpd read` needs confluent-kafka: pip install 'kpd[tools]'\n")
        return EX_UNAVAILABLE
    bootstrap = _bootstrap_for_read(args)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kpd-read",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(args.topic, timeout=10).topics.get(args.topic)
        if metadata is None or metadata.error is not None:
            sys.stderr.write(f"kpd: topic {args.topic!r} not found on {bootstrap}\n")
            return 1
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        printed = 0
        while len(at_end) < len(partitions) and (args.count is None or printed < args.count):
            message = consumer.poll(args.timeout)
            if message is None:
                break
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    continue
                sys.stderr.write(f"kpd: {message.error()}\n")
                return 1
            key = message.key()
            value = message.value() or b""
            prefix = f"{message.partition()}:{message.offset()} "
            if key is not None:
                prefix += key.decode(errors="replace") + args.key_separator
            print(prefix + value.decode(errors="replace"))
            printed += 1
    finally:
        consumer.close()
    return 0


def cmd_status(args) -> int:
    import json

    from daemon.process.status_text import fetch_status, format_status

    config = _load(args.config)
    if not config.metrics.enabled:
        sys.stderr.write("kpd: metrics.enabled is false: the daemon serves no status\n")
        return EX_UNAVAILABLE
    host, port = config.metrics.listen
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback
    try:
        status = fetch_status(host, port)
    except OSError as exc:
        sys.stderr.write(f"kpd: no daemon answers on {host}:{port}: {exc}\n")
        return EX_UNAVAILABLE
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kpd", description="kpd: a Kafka producer daemon for one host")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="YAML config file")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)
    send = sub.add_parser("send", help="send stdin lines as records")
    send.add_argument("--topic", required=True)
    send.add_argument("--socket", default="/run/kpd/kpd.sock")
    send.add_argument("--key-separator", help="split each line into key and value at this string")
    send.add_argument("--acks", choices=("none", "accepted", "kafka"), default="kafka")
    send.set_defaults(func=cmd_send)
    status = sub.add_parser("status", help="what the running daemon is doing")
    status.add_argument("--config", required=True, help="the running daemon's config file")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=cmd_status)
    read = sub.add_parser("read", help="print a topic's records (development aid)")
    read.add_argument("--topic", required=True)
    source = read.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config", help="read from the cluster (or embedded broker) of this config"
    )
    source.add_argument("--bootstrap", help="host:port of a broker")
    read.add_argument("--count", type=int, help="stop after this many records")
    read.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for records")
    read.add_argument("--key-separator", default="\t")
    read.set_defaults(func=cmd_read)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
