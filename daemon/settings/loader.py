"""The one loader and the one ``finalize`` step of kpd's configuration.

``load`` walks a parsed YAML mapping against the schema (``daemon.settings.schema``): every
value goes through its type, unknown keys and rejected Kafka keys become errors naming their
YAML path, missing keys take the schema default. Then ``finalize`` applies the cross-field
rules, which, as in Kafka's ``ProducerConfig``, depend on whether the user *wrote* a value or
left it at its default: an explicit conflict is an error, an implicit one is resolved with a
warning. All errors of a phase are collected into one ``ConfigError``; warnings are returned,
never logged here.

Imports only the stdlib, PyYAML and ``daemon.settings``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from daemon.settings.schema import (
    KAFKA_ALIASES,
    SECTIONS,
    SETTINGS,
    Setting,
    unsupported_reason,
)
from daemon.settings.values import REQUIRED

_BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
_SECTION_KEYS: dict[str, list[str]] = {
    sec.name: [s.key for s in SETTINGS if s.section == sec.name] for sec in SECTIONS
}
ALL_SECTIONS: tuple[str, ...] = tuple(sec.name for sec in SECTIONS)


class ConfigError(Exception):
    """A configuration the daemon must not start with.

    ``path`` and ``message`` describe the first problem; ``errors`` holds every
    ``(path, message)`` found, and ``str()`` gives one line per problem.
    """

    def __init__(self, path: str, message: str,
                 errors: Iterable[tuple[str, str]] = (), source: str = "") -> None:
        self.path = path
        self.message = message
        self.errors: tuple[tuple[str, str], ...] = tuple(errors) or ((path, message),)
        self.source = source
        super().__init__(path, message)

    def __str__(self) -> str:
        return "\n".join(_error_line(path, message) for path, message in self.errors)


def _error_line(path: str, message: str) -> str:
    if not path:
        return message
    # "kafka.acks: must be one of ...", but "kafka.x is required" reads as a sentence.
    return f"{path} {message}" if message.startswith("is ") else f"{path}: {message}"


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, where PyYAML would let the last one win."""


def _construct_mapping_once(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error becomes a ConfigError with its line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no object tags
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        message = f"{source}: invalid YAML at {where}: {exc.problem or exc.context}"
        raise ConfigError("", message, source=source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{source}: invalid YAML: {exc}", source=source) from exc


# --- the loader ------------------------------------------------------------------------------


@dataclass
class Draft:
    """Parsed values on their way to the frozen dataclasses; what ``finalize`` rules edit."""

    values: dict[str, dict[str, Any]]  # section -> dataclass attr -> value
    explicit: set[str] = field(default_factory=set)  # YAML paths the user wrote
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, path: str) -> Any:
        setting = _BY_PATH[path]
        return self.values[setting.section][setting.attr]

    def set(self, path: str, value: Any) -> None:
        setting = _BY_PATH[path]
        self.values[setting.section][setting.attr] = value

    def is_explicit(self, path: str) -> bool:
        return path in self.explicit

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))


def load(data: Any, source: str, sections: tuple[str, ...] = ALL_SECTIONS) -> Draft:
    """Validate ``data`` (a parsed YAML document) and finalize it; raises ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: the top level must be a mapping of sections",
                          source=source)
    draft = Draft(values={name: {} for name in sections})
    for name in data:
        if name not in sections:
            draft.error(str(name), _unknown(str(name), list(sections), "section"))
    for name in sections:
        _load_section(draft, name, data.get(name))
    if not draft.errors:
        finalize(draft)
    if draft.errors:
        path, message = draft.errors[0]
        raise ConfigError(path, message, draft.errors, source=source)
    return draft


def _load_section(draft: Draft, section: str, body: Any) -> None:
    if body is None:  # `kafka:` with nothing under it
        body = {}
    if not isinstance(body, dict):
        draft.error(section, f"must be a mapping of settings (got {body!r})")
        return
    for key, raw in body.items():
        if section == "kafka" and key in KAFKA_ALIASES:
            if KAFKA_ALIASES[key] in body:
                draft.error(f"{section}.{key}", f"is an alias of {KAFKA_ALIASES[key]}: give one")
                continue
            key = KAFKA_ALIASES[key]
        setting = _BY_PATH.get(f"{section}.{key}")
        if setting is None:
            draft.error(f"{section}.{key}", _unknown_key(section, str(key), raw))
            continue
        draft.explicit.add(setting.path)
        _store(draft, setting, raw)
    for setting in SETTINGS:
        if setting.section == section and setting.path not in draft.explicit:
            if setting.default is REQUIRED:
                draft.error(setting.path, "is required")
            else:
                _store(draft, setting, setting.default)


def _store(draft: Draft, setting: Setting, raw: Any) -> None:
    try:
        draft.values[setting.section][setting.attr] = setting.kind.parse(raw)
    except ValueError as exc:
        draft.error(setting.path, str(exc))


def _unknown_key(section: str, key: str, raw: Any) -> str:
    reason = unsupported_reason(key) if section == "kafka" else None
    if reason:
        return f"is a Kafka producer setting kpd does not support: {reason}"
    known = _SECTION_KEYS[section]
    flat = [k for k in known if k.startswith(key + ".")]
    if isinstance(raw, dict) and flat:
        return f"unknown key; Kafka keys are written flat, e.g. '{flat[0]}: ...'"
    return _unknown(key, known, "key", prefix=f"{section}.")


def _unknown(name: str, known: list[str], what: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"unknown {what}" + (f"; did you mean {prefix}{close[0]}?" if close else "")


# --- finalize: cross-field rules -------------------------------------------------------------
#
# Each rule's docstring is its entry in docs/configuration.md. Order matters: the idempotence
# rules may turn idempotence off before the in-flight cap is checked, as in Kafka's
# ProducerConfig.postProcessAndValidateIdempotenceConfigs.

_IDEMPOTENCE = "kafka.enable.idempotence"
_TRANSACTIONAL_ID = "kafka.transactional.id"


def _transactions_need_idempotence(d: Draft) -> None:
    """`transactional.id` needs idempotence: `enable.idempotence: false` with it is an error
    naming both keys, and so are the conflicts below, which without a transactional id would
    only turn idempotence off (Java: "Cannot set a transactional.id without also enabling
    idempotence")."""
    if d.get(_TRANSACTIONAL_ID) is not None and not d.get(_IDEMPOTENCE):
        d.error(_IDEMPOTENCE, f"is false but {_TRANSACTIONAL_ID} needs idempotence")


def _idempotence_needs_acks_all(d: Draft) -> None:
    """Idempotence needs `acks: all`. With `enable.idempotence: true` written in the file,
    `acks` 0 or 1 is an error; with idempotence left at its default, it is turned off with a
    warning."""
    acks = d.get("kafka.acks")
    if d.get(_IDEMPOTENCE) and acks != -1:
        _conflict(d, "kafka.acks", f"is {acks}", "needs acks: all")


def _idempotence_needs_retries(d: Draft) -> None:
    """Idempotence needs `retries` > 0: the same explicit/implicit treatment as acks."""
    if d.get(_IDEMPOTENCE) and d.get("kafka.retries") == 0:
        _conflict(d, "kafka.retries", "is 0", "needs retries > 0")


def _conflict(d: Draft, path: str, actual: str, need: str) -> None:
    if d.get(_TRANSACTIONAL_ID) is not None:
        d.error(path, f"{actual} but {_TRANSACTIONAL_ID} is set and idempotence {need}")
    elif d.is_explicit(_IDEMPOTENCE):
        d.error(path, f"{actual} but kafka.enable.idempotence: true {need}")
    else:
        d.set(_IDEMPOTENCE, False)
        d.warnings.append(f"{_IDEMPOTENCE} turned off because {path} {actual} (idempotence "
                          f"{need}); set enable.idempotence: false to silence this warning")


def _idempotence_caps_in_flight(d: Draft) -> None:
    """With idempotence on, `max.in.flight.requests.per.connection` above 5 is an error even
    when idempotence is only on by default, as in Kafka: brokers keep the sequence state of a
    producer's last 5 batches per partition only (ProducerStateEntry.NUM_BATCHES_TO_RETAIN)."""
    in_flight = d.get("kafka.max.in.flight.requests.per.connection")
    if d.get(_TRANSACTIONAL_ID) is not None and in_flight > 5:
        d.error("kafka.max.in.flight.requests.per.connection",
                f"must be at most 5 with {_TRANSACTIONAL_ID} set (got {in_flight})")
    elif d.get(_IDEMPOTENCE) and in_flight > 5:
        d.error("kafka.max.in.flight.requests.per.connection",
                f"must be at most 5 with idempotence (got {in_flight}); "
                "set kafka.enable.idempotence: false to allow more")


def _transaction_fits_buffer(d: Draft) -> None:
    """`transaction.max.bytes` must be at most half of `buffer.memory`, which holds a
    transaction's batches until it commits: a larger value written in the file is an error
    naming both keys; the default is lowered to the half with a warning."""
    limit = d.get("kafka.buffer.memory") // 2
    size = d.get("kafka.transaction.max.bytes")
    if d.get(_TRANSACTIONAL_ID) is None or size <= limit:
        return
    if d.is_explicit("kafka.transaction.max.bytes"):
        d.error("kafka.transaction.max.bytes",
                f"must be at most half of kafka.buffer.memory = {limit} (got {size})")
    else:
        d.set("kafka.transaction.max.bytes", max(1024, limit))
        d.warnings.append(f"kafka.transaction.max.bytes lowered from its default {size} to "
                          f"half of kafka.buffer.memory = {limit}")


def _transactions_commit_before_timeout(d: Draft) -> None:
    """`transaction.interval.ms` must be below `transaction.timeout.ms`, or the coordinator
    would abort every transaction before kpd commits it (an error naming both keys)."""
    interval = d.get("kafka.transaction.interval.ms")
    timeout = d.get("kafka.transaction.timeout.ms")
    if d.get(_TRANSACTIONAL_ID) is not None and interval >= timeout:
        d.error("kafka.transaction.interval.ms",
                f"must be below kafka.transaction.timeout.ms = {timeout} (got {interval})")


def _delivery_timeout_covers_linger_and_request(d: Draft) -> None:
    """`delivery.timeout.ms` must be >= `linger.ms` + `request.timeout.ms`: a smaller value
    written in the file is an error; the default is raised to the sum with a warning
    (Kafka's KafkaProducer.configureDeliveryTimeout)."""
    floor = d.get("kafka.linger.ms") + d.get("kafka.request.timeout.ms")
    delivery = d.get("kafka.delivery.timeout.ms")
    if delivery >= floor:
        return
    if d.is_explicit("kafka.delivery.timeout.ms"):
        d.error("kafka.delivery.timeout.ms",
                f"must be >= kafka.linger.ms + kafka.request.timeout.ms = {floor} "
                f"(got {delivery})")
    else:
        d.set("kafka.delivery.timeout.ms", floor)
        d.warnings.append(f"kafka.delivery.timeout.ms raised from its default {delivery} to "
                          f"linger.ms + request.timeout.ms = {floor}")


def _reconnect_backoff_static_when_only_initial_set(d: Draft) -> None:
    """`reconnect.backoff.ms` written without `reconnect.backoff.max.ms` makes the reconnect
    backoff static at `reconnect.backoff.ms`, with a warning (Kafka's
    CommonClientConfigs.postProcessReconnectBackoffConfigs)."""
    initial, cap = "kafka.reconnect.backoff.ms", "kafka.reconnect.backoff.max.ms"
    if d.is_explicit(initial) and not d.is_explicit(cap):
        d.set(cap, d.get(initial))
        d.warnings.append(f"exponential reconnect backoff disabled: {initial} is set but "
                          f"{cap} is not")


_BACKOFF_PAIRS = (
    ("kafka.retry.backoff.ms", "kafka.retry.backoff.max.ms"),
    ("kafka.reconnect.backoff.ms", "kafka.reconnect.backoff.max.ms"),
    ("kafka.socket.connection.setup.timeout.ms", "kafka.socket.connection.setup.timeout.max.ms"),
)


def _backoff_initial_within_cap(d: Draft) -> None:
    """An initial backoff or setup timeout above its `.max.ms` cap gives a static value equal
    to the cap, with a warning (Kafka's CommonClientConfigs.warnDisablingExponentialBackoff);
    kpd lowers the initial value so that initial <= cap always holds for the engine."""
    for initial, cap in _BACKOFF_PAIRS:
        if d.get(initial) > d.get(cap):
            d.warnings.append(f"{initial} ({d.get(initial)}) is above {cap} ({d.get(cap)}): "
                              f"a static {d.get(cap)} ms is used")
            d.set(initial, d.get(cap))


_MIN_RING = 64 * 1024  # the schema's smallest ring
_REPORTS_SHARE = 9  # a worker's reports ring gets 1/9 of its share, its records ring the rest


def _rings_from_the_budget(d: Draft) -> None:
    """Ring sizes not written are a worker's share of `rings.memory` (multiples of 8)."""
    share = d.get("rings.memory") // d.get("workers.count")
    if d.get("rings.reports_bytes") is None:
        d.set("rings.reports_bytes", max(_MIN_RING, share // _REPORTS_SHARE // 8 * 8))
    if d.get("rings.records_bytes") is None:
        records = (share - share // _REPORTS_SHARE) // 8 * 8
        d.set("rings.records_bytes", max(_MIN_RING, records))
    elif d.is_explicit("rings.memory") and d.is_explicit("rings.reports_bytes"):
        d.warnings.append("rings.memory is ignored: rings.records_bytes and "
                          "rings.reports_bytes are both set")  # fmt: skip


def _ring_holds_largest_request(d: Draft) -> None:
    """`rings.records_bytes` must be at least twice `kafka.max.request.size`: one ring entry
    may take at most half its ring (so an entry behind a wrap-around still fits), and the
    largest record Kafka would take must fit in one entry. A size derived from `rings.memory`
    names that setting (and the worker count) instead."""
    ring, largest = d.get("rings.records_bytes"), d.get("kafka.max.request.size")
    if ring >= 2 * largest:
        return
    if d.is_explicit("rings.records_bytes"):
        d.error("rings.records_bytes",
                f"must be at least 2 x kafka.max.request.size = {2 * largest} (got {ring})")
        return
    workers = d.get("workers.count")
    needed = -(-2 * largest * _REPORTS_SHARE // (_REPORTS_SHARE - 1)) * workers
    d.error("rings.memory",
            f"gives each of {workers} workers a records ring of {ring} bytes, below 2 x "
            f"kafka.max.request.size = {2 * largest}: raise it to at least {needed} "
            "(or lower workers.count)")  # fmt: skip


# Room a record takes in a produce request beyond its key and value (batch and record
# headers, varints), with margin: a line at max_line_bytes must still fit one request.
_REQUEST_OVERHEAD = 1024


def _line_fits_a_request(d: Draft) -> None:
    """`socket.lines.max_line_bytes` must be at most `kafka.max.request.size` - 1KiB, so that
    a line of the largest allowed length still fits one produce request (and one ring entry),
    and `socket.lines.path` must differ from `socket.path`."""
    lines = d.get("socket.lines")
    if lines is None:
        return
    limit = d.get("kafka.max.request.size") - _REQUEST_OVERHEAD
    if lines.max_line_bytes > limit:
        d.error("socket.lines",
                f"max_line_bytes must be at most kafka.max.request.size - 1KiB = {limit} "
                f"(got {lines.max_line_bytes})")
    if lines.path == d.get("socket.path"):
        d.error("socket.lines", "path must differ from socket.path")


def _lines_topic_allowed(d: Draft) -> None:
    """`socket.lines.topic` must be allowed by `topics.allow`: every line would be refused."""
    lines = d.get("socket.lines")
    if lines is not None and not any(
        fnmatch.fnmatchcase(lines.topic, pattern) for pattern in d.get("topics.allow")
    ):
        d.error("socket.lines", f"topic {lines.topic!r} is not in topics.allow")


_SASL_NEEDS_USER = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _sasl_needs_a_mechanism_and_its_credentials(d: Draft) -> None:
    """`security.protocol` SASL_PLAINTEXT or SASL_SSL needs `sasl.mechanism`. PLAIN and
    SCRAM-SHA-* need `sasl.username` and `sasl.password`; OAUTHBEARER with method `oidc` needs
    the token endpoint URL, client id and client secret; with method `default` it needs
    `sasl.oauthbearer.token` or `enable.sasl.oauthbearer.unsecure.jwt: true` with a
    `principal=` in `sasl.oauthbearer.config`."""
    if d.get("kafka.security.protocol") not in ("SASL_PLAINTEXT", "SASL_SSL"):
        return
    mechanism = d.get("kafka.sasl.mechanism")
    needed: tuple[str, ...] = ()
    if mechanism is None:
        d.error("kafka.sasl.mechanism", f"is required with security.protocol "
                f"{d.get('kafka.security.protocol')}")
    elif mechanism in _SASL_NEEDS_USER:
        needed = ("kafka.sasl.username", "kafka.sasl.password")
    elif d.get("kafka.sasl.oauthbearer.method") == "oidc":
        needed = ("kafka.sasl.oauthbearer.token.endpoint.url", "kafka.sasl.oauthbearer.client.id",
                  "kafka.sasl.oauthbearer.client.secret")
        url = d.get("kafka.sasl.oauthbearer.token.endpoint.url") or ""
        if url and not url.startswith(("https://", "http://")):
            d.error("kafka.sasl.oauthbearer.token.endpoint.url",
                    "must be an https:// (or http://) URL")
    elif d.get("kafka.enable.sasl.oauthbearer.unsecure.jwt"):
        config = dict(d.get("kafka.sasl.oauthbearer.config"))
        if "principal" not in config:
            d.error("kafka.sasl.oauthbearer.config",
                    "needs principal=NAME for the unsecured JWT")
        if not config.get("lifeSeconds", "3600").isdigit():
            d.error("kafka.sasl.oauthbearer.config", "lifeSeconds must be a whole number")
    elif d.get("kafka.sasl.oauthbearer.token") is None:
        d.error("kafka.sasl.oauthbearer.token",
                "is required with sasl.mechanism OAUTHBEARER and method default, unless "
                "enable.sasl.oauthbearer.unsecure.jwt is true (development only)")
    for path in needed:
        if d.get(path) is None:
            d.error(path, f"is required with sasl.mechanism {mechanism}")


def _client_certificate_needs_its_key(d: Draft) -> None:
    """`ssl.certificate.location` and `ssl.key.location` go together (mutual TLS)."""
    cert, key = "kafka.ssl.certificate.location", "kafka.ssl.key.location"
    if (d.get(cert) is None) != (d.get(key) is None):
        missing = key if d.get(key) is None else cert
        d.error(missing, f"is required with {cert if missing == key else key}")


def _security_settings_unused_by_the_protocol_warn(d: Draft) -> None:
    """`ssl.*` settings given a value other than their default with a protocol without TLS,
    or `sasl.*` settings with one without SASL, are ignored with a warning (a likely mistake
    in `security.protocol`)."""
    protocol = d.get("kafka.security.protocol")
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    ignored = sorted(
        path for path in d.explicit
        if ((path.startswith("kafka.ssl.") and not tls)
            or (path.startswith(("kafka.sasl.", "kafka.enable.sasl.")) and not sasl))
        and d.get(path) != _BY_PATH[path].kind.parse(_BY_PATH[path].default)
    )
    if ignored:
        d.warnings.append(f"{', '.join(ignored)} ignored: kafka.security.protocol is {protocol}")


@dataclass(frozen=True)
class Rule:
    sections: tuple[str, ...]  # the rule runs only when all of these are loaded
    check: Callable[[Draft], None]

    @property
    def doc(self) -> str:
        return " ".join((self.check.__doc__ or "").split())


FINALIZE_RULES: tuple[Rule, ...] = (
    Rule(("kafka",), _transactions_need_idempotence),
    Rule(("kafka",), _idempotence_needs_acks_all),
    Rule(("kafka",), _idempotence_needs_retries),
    Rule(("kafka",), _idempotence_caps_in_flight),
    Rule(("kafka",), _transaction_fits_buffer),
    Rule(("kafka",), _transactions_commit_before_timeout),
    Rule(("kafka",), _delivery_timeout_covers_linger_and_request),
    Rule(("kafka",), _reconnect_backoff_static_when_only_initial_set),
    Rule(("kafka",), _backoff_initial_within_cap),
    Rule(("workers", "rings"), _rings_from_the_budget),
    Rule(("kafka", "workers", "rings"), _ring_holds_largest_request),
    Rule(("kafka", "socket"), _line_fits_a_request),
    Rule(("socket", "topics"), _lines_topic_allowed),
    Rule(("kafka",), _sasl_needs_a_mechanism_and_its_credentials),
    Rule(("kafka",), _client_certificate_needs_its_key),
    Rule(("kafka",), _security_settings_unused_by_the_protocol_warn),
)


def finalize(draft: Draft) -> None:
    """Apply every cross-field rule whose sections are loaded, in order."""
    for rule in FINALIZE_RULES:
        if all(section in draft.values for section in rule.sections):
            rule.check(draft)
