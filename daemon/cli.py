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
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s kpd[supervisor] %(levelname)s %(message)s",
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
