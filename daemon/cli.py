"""The ``kpd`` command: run the daemon, check a config, send records from a shell, look at
a running daemon.

Every subcommand takes ``--config`` (default ``$KPD_CONFIG``, else /etc/kpd/kpd.yaml); the
ones that talk to the daemon's socket take ``--socket``, which defaults to that config's
``socket.path``. Exit statuses follow sysexits (``EXIT_STATUSES``, listed in ``kpd --help``).
A user's mistake gets one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import sys

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78
_SEND_BUFFER_BYTES = 8 * 1024 * 1024  # `kpd send`: framed bytes not yet written to kpd

EXIT_STATUSES = (
    (EX_OK, "success"),
    (EX_FAILED, "kpd send: some records were not delivered (each is printed)"),
    (EX_USAGE, "bad command line (EX_USAGE)"),
    (EX_DATAERR, "kpd send: an input line is not a record (EX_DATAERR)"),
    (EX_NOINPUT, "kpd read: the topic does not exist (EX_NOINPUT)"),
    (EX_UNAVAILABLE, "the daemon (or a broker, for kpd read) is not reachable (EX_UNAVAILABLE)"),
    (EX_OSERR, "kpd run: the daemon could not start, e.g. metrics port in use (EX_OSERR)"),
    (EX_CANTCREAT, "kpd run: the instance lock file cannot be created (EX_CANTCREAT)"),
    (EX_TEMPFAIL, "kpd run: another kpd runs with this socket or these ring files (EX_TEMPFAIL)"),
    (EX_CONFIG, "the config file is missing, unreadable or invalid (EX_CONFIG)"),
)

DEFAULT_CONFIG = "/etc/kpd/kpd.yaml"
DEFAULT_SOCKET = "/run/kpd/kpd.sock"

# Kafka's rule for topic names (clients/.../internals/Topic.java): 1-249 of [a-zA-Z0-9._-],
# and neither "." nor "..".
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2; sysexits says 64
        self.print_usage(sys.stderr)
        sys.stderr.write(f"kpd: error: {message}\n")
        sys.exit(EX_USAGE)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default after its help (options whose
    default depends on something else say so in their help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "(default" in text:
            return text
        return f"{text} (default: {default!r})" if action.option_strings else text


def _load(path: str):
    from daemon.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        if not exc.path:  # the file itself: unreadable or not YAML; the message names it
            sys.stderr.write(f"kpd: {exc}\n")
        else:
            sys.stderr.write(f"kpd: {exc.source}: invalid configuration:\n{exc}\n")
        sys.exit(EX_CONFIG)


def _config_path(args) -> str:
    return args.config or os.environ.get("KPD_CONFIG") or DEFAULT_CONFIG


def _socket_path(args) -> str:
    """--socket, else the socket.path of --config (or of the default config, when that file
    exists), else the packaged default."""
    if args.socket:
        return args.socket
    path = _config_path(args)
    if args.config or os.environ.get("KPD_CONFIG") or os.path.exists(path):
        return str(_load(path).socket.path)
    return DEFAULT_SOCKET


def _topic(name: str) -> str:
    """argparse type of --topic: Kafka's topic name rule, checked before anything is sent."""
    if not _LEGAL_TOPIC.fullmatch(name) or name in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a legal Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -, "
            "not '.' or '..')"
        )
    return name


def _check_security(config, path: str) -> None:
    """The TLS files open (CA, client certificate, key and its passphrase): a config error
    at start rather than a worker that fails to boot."""
    from daemon.process.preflight import security_problems

    problems = security_problems(config.producer)
    if problems:
        sys.stderr.write(f"kpd: {path}: invalid configuration:\n" + "\n".join(problems) + "\n")
        sys.exit(EX_CONFIG)


def cmd_check_config(args) -> int:
    path = args.file or _config_path(args)
    config = _load(path)
    _check_security(config, path)
    for warning in config.warnings:
        print(f"warning: {warning}")
    print(f"{path}: OK ({config.workers.count} workers, socket {config.socket.path})")
    return 0


def cmd_run(args) -> int:
    import uvloop

    from daemon.process.instance import AlreadyRunning, instance_locks
    from daemon.process.logs import setup_logging
    from daemon.process.status.titles import set_title
    from daemon.process.supervisor import Supervisor

    path = _config_path(args)
    config = _load(path)
    _check_security(config, path)
    locks = instance_locks(config)
    held = []
    try:
        for lock in locks:  # before anything starts: a second instance touches nothing
            try:
                lock.acquire()
            except AlreadyRunning as exc:
                sys.stderr.write(f"kpd: {exc}\n")
                return EX_TEMPFAIL
            except OSError as exc:
                sys.stderr.write(f"kpd: cannot create the instance lock {lock.path}: "
                                 f"{exc.strerror}\n")  # fmt: skip
                return EX_CANTCREAT
            held.append(lock)
        set_title(f"kpd: supervisor {path}")
        setup_logging(config.log.level, config.log.format, "supervisor")
        for warning in config.warnings:
            logging.getLogger("kpd").warning("config: %s", warning)
        supervisor = Supervisor(config, path)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(supervisor.run())
    finally:
        for lock in held:
            lock.release()


# What `kpd send` says of the records it got an outcome for, by --acks.
_DONE_WORD = {"kafka": "sent", "accepted": "accepted", "none": "written"}


def _report_failure(line: int, error: BaseException) -> None:
    """One line per failed record (the first ones): its input line and why."""
    where = f"stdin line {line}" if line else "stdin"
    sys.stderr.write(f"kpd: {where}: record failed: {error}\n")


def cmd_send(args) -> int:
    from daemon.cli_input import InputError, read_json_records
    from kpd import Producer
    from kpd.lines import LineSender

    socket_path = _socket_path(args)
    separator = args.key_separator.encode() if args.key_separator else None
    bad_input: str | None = None
    try:
        # A Producer starts without kpd and waits for it (max_block_ms); a command line
        # tool should say at once that the daemon is not there.
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(socket_path)
        # A small buffer: a pipe that never ends must run in flat memory (LineSender).
        producer = Producer(socket_path, acks=args.acks, buffer_bytes=_SEND_BUFFER_BYTES)
    except OSError as exc:
        sys.stderr.write(f"kpd: cannot connect to {socket_path}: {exc}\n")
        return EX_UNAVAILABLE
    with producer:
        sender = LineSender(producer, args.topic, separator, _report_failure)
        try:
            if args.format == "lines":
                sender.send_stream(sys.stdin.buffer)  # the fast path: a bulk per chunk
            else:
                sender.send_records(read_json_records(sys.stdin.buffer))
        except InputError as exc:  # what was read before is sent
            bad_input = f"kpd: stdin {exc}; input stopped there, {_not_sent(exc.line)}"
        except (ValueError, TypeError) as exc:
            bad_input = f"kpd: {exc}"
        sender.finish()
    skipped = f", {sender.empty} empty lines skipped" if sender.empty else ""
    word = _DONE_WORD[args.acks]
    print(f"{word} {sender.delivered} records to {args.topic}, {sender.failed} failed{skipped}")
    if bad_input is not None:
        sys.stderr.write(bad_input + "\n")
        return EX_DATAERR
    return EX_FAILED if sender.failed else EX_OK


def _not_sent(line: int) -> str:
    """How many lines from ``line`` on were not sent: counted when stdin is a file (a pipe may
    never end, so its rest is not read)."""
    import stat

    if not stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        return f"lines {line} and after were not sent (the rest of stdin was not read)"
    rest = sys.stdin.buffer.read()
    left = rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)
    return f"lines {line} to {line + left} ({left + 1} lines) were not sent"


def _bootstrap_for_read(args) -> str:
    if args.bootstrap:
        return args.bootstrap
    from pathlib import Path

    from daemon.process.embedded import address_file

    config = _load(_config_path(args))
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
            return EX_NOINPUT
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
                return EX_UNAVAILABLE
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

    from daemon.process.status.text import fetch_status, format_status

    url, explain = _status_url(args)
    try:
        status = fetch_status(url)
    except OSError as exc:
        reason = getattr(exc, "reason", exc)  # urllib wraps the socket's error
        why = getattr(reason, "strerror", None) or str(reason)
        sys.stderr.write(f"kpd: {explain(f'{url}status', why)}\n")
        return EX_UNAVAILABLE
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return EX_OK


def _status_url(args):
    """The daemon's HTTP endpoint and what to say when it does not answer: --url; else the
    URL file beside the socket (--socket, the config's socket.path, or the socket of the
    supervisor running that config when the file no longer loads); else metrics.listen."""
    from daemon.config import ConfigError, load_config
    from daemon.process.status.address import http_url, socket_of_supervisor, url_of

    if args.url:
        return args.url.rstrip("/") + "/", lambda url, why: f"nothing answers on {url} ({why})"
    path = _config_path(args)
    config = None
    socket_path = args.socket
    try:
        config = load_config(path)
    except ConfigError as exc:  # a daemon may still run the settings it loaded before
        socket_path = socket_path or socket_of_supervisor(path)
        if socket_path is None:
            sys.stderr.write(f"kpd: {exc}\n(and no running kpd supervisor of {path} found)\n")
            sys.exit(EX_CONFIG)
        first = str(exc).splitlines()[0]
        sys.stderr.write(f"kpd: warning: {path} does not load now ({first}); asking the "
                         f"daemon running it, socket {socket_path}\n")  # fmt: skip
    if socket_path is None:
        socket_path = str(config.socket.path)
    url = url_of(socket_path)
    if url is not None:
        return (
            url,
            lambda url, why: (
                f"nothing answers on {url} ({why}), the address the daemon of {socket_path} "
                "wrote: it may be stopping or hung"
            ),
        )
    if config is None or not config.metrics.enabled:
        sys.stderr.write(
            f"kpd: the daemon of {socket_path or path} serves no status (not running, or "
            "metrics.enabled is false)\n"
        )
        sys.exit(EX_UNAVAILABLE)
    host, port = config.metrics.listen

    def explain(url: str, why: str) -> str:
        if os.path.exists(socket_path):
            return (
                f"nothing answers on {url} ({why}), but the socket {socket_path} exists: "
                f"the daemon of {path} may be starting, stopping or hung"
            )
        return (
            f"the daemon of {path} is not running (nothing answers on {url}: {why}; "
            f"no socket at {socket_path})"
        )

    return http_url(host, port), explain


def _epilog() -> str:
    lines = ["exit statuses (sysexits.h):"]
    lines += [f"  {code:<3} {meaning}" for code, meaning in EXIT_STATUSES]
    return "\n".join(lines)


def _command(sub, name: str, help_text: str, func, *, socket: bool = False):
    """A subcommand with the options every subcommand shares, spelled and defaulted alike."""
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"the daemon's YAML config (default: $KPD_CONFIG, else {DEFAULT_CONFIG})",
    )
    if socket:
        parser.add_argument(
            "--socket",
            metavar="PATH",
            help=f"the daemon's socket (default: socket.path of the config, else {DEFAULT_SOCKET})",
        )
    parser.set_defaults(func=func, socket=None)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kpd",
        description="kpd: a Kafka producer daemon for one host",
        epilog=_epilog(),
        formatter_class=_Formatter,
    )
    from daemon.version import VERSION

    parser.add_argument("--version", action="version", version=f"kpd {VERSION}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    _command(sub, "run", "run the daemon (the supervisor and its children)", cmd_run)
    check = _command(sub, "check-config", "validate a config file and exit", cmd_check_config)
    check.add_argument(
        "file", nargs="?", metavar="FILE", help="the file to check (default: --config)"
    )
    send = _command(
        sub, "send", "send the records of stdin, one per line, and wait for their reports",
        cmd_send, socket=True,
    )  # fmt: skip
    send.add_argument("--topic", required=True, type=_topic, help="the topic to send to")
    send.add_argument(
        "--format",
        choices=("lines", "jsonl"),
        default="lines",
        help="lines: each line is a value; jsonl: each line a JSON object with key, value, "
        "headers, partition and timestamp (ms), all optional",
    )
    send.add_argument(
        "--key-separator",
        metavar="TEXT",
        help="--format lines: split each line into key and value at the first TEXT",
    )
    send.add_argument(
        "--acks",
        choices=("none", "accepted", "kafka"),
        default="kafka",
        help="wait for nothing, for kpd to hold each record, or for Kafka's acknowledgement",
    )
    status = _command(
        sub, "status", "what the running daemon is doing (from its /status endpoint)",
        cmd_status, socket=True,
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="print the /status document as JSON")
    status.add_argument(
        "--url",
        metavar="URL",
        help="the daemon's HTTP endpoint, e.g. http://127.0.0.1:9464/ (default: what the daemon "
        "wrote beside its socket, else metrics.listen of the config)",
    )
    read = _command(
        sub, "read", "print a topic's records as partition:offset key<TAB>value (development aid)",
        cmd_read,
    )  # fmt: skip
    read.add_argument("--topic", required=True, type=_topic, help="the topic to read")
    read.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="read from this broker instead of the config's"
    )
    read.add_argument("--count", type=int, help="stop after this many records")
    read.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for records")
    read.add_argument("--key-separator", default="\t", help="printed between key and value")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
