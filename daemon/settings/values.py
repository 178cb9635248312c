"""Value types of the configuration: how one YAML value is checked and converted.

Each type is a small frozen object with ``parse(raw) -> value`` (raising ``ValueError`` whose
text completes the sentence "<yaml path>: ...") and ``describe() -> str`` for the reference
doc. Types know nothing of paths, sections or other settings: cross-field rules live in the
loader's ``finalize`` step.

Pure: no I/O except reading the CPU affinity for ``workers.count: auto`` and secret files
(``daemon.settings.secret``); imports only the stdlib.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.settings.secret import Secret, parse_secret

INT32_MAX = 2**31 - 1  # Java int: the bound of Kafka's Type.INT settings
INT64_MAX = 2**63 - 1  # Java long: the bound of Kafka's Type.LONG settings

# Binary (IEC) units are powers of 1024, decimal (SI) units powers of 1000, as in systemd and
# Kubernetes: "64MiB" is 67108864 bytes, "64MB" is 64000000.
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

# Kafka topic names: [a-zA-Z0-9._-], at most 249 characters (Kafka `Topic.validate`).
# Patterns add the glob wildcards * and ?.
_TOPIC_PATTERN = re.compile(r"^[a-zA-Z0-9._*?-]{1,249}$")


def _got(raw: Any) -> str:
    return f"(got {raw!r})"


def _split_number(raw: str, units: Mapping[str, int], what: str) -> tuple[float, int]:
    match = _NUMBER_UNIT.match(raw)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in units):
        raise ValueError(f"must be {what} {_got(raw)}")
    return float(match.group(1)), units[unit] if unit else 0


def _int_of(raw: Any, what: str) -> int:
    """An int from a YAML int or a decimal string (Kafka configs are often strings)."""
    # bool is a subclass of int: `batch.size: true` is a mistake, not 1.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
        return int(raw)
    raise ValueError(f"must be {what} {_got(raw)}")


def _bounds(low: int, high: int, show: Any = str) -> str:
    # A Java long's maximum is no real limit; "at least" reads better than 19 digits.
    return f">= {show(low)}" if high == INT64_MAX else f"{show(low)}..{show(high)}"


def human_size(n: int) -> str:
    """Bytes in the largest binary unit that divides them exactly: 65536 -> '64KiB'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _SIZE_UNITS[unit.lower()]
        if n and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_range(value: float, low: float, high: float, unit: str) -> None:
    if not low <= value <= high:
        raise ValueError(
            f"must be between {_num(low)} and {_num(high)}{unit} (got {_num(value)}{unit})")


@dataclass(frozen=True)
class Bool:
    def parse(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ValueError(f"must be true or false {_got(raw)}")

    def describe(self) -> str:
        return "bool"


@dataclass(frozen=True)
class Int:
    low: int = 0
    high: int = INT32_MAX
    also: tuple[int, ...] = ()  # values allowed outside [low, high], e.g. gzip's -1

    def parse(self, raw: Any) -> int:
        value = _int_of(raw, "an integer")
        if value not in self.also:
            _check_range(value, self.low, self.high, "")
        return value

    def describe(self) -> str:
        extra = "".join(f" or {v}" for v in self.also)
        return f"int {_bounds(self.low, self.high)}{extra}"


@dataclass(frozen=True)
class Size:
    """Bytes: an int, or a number with a unit ("64MiB", "16 KiB", "1.5GiB", "100MB")."""

    low: int = 0
    high: int = INT32_MAX
    multiple_of: int = 1

    def parse(self, raw: Any) -> int:
        if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
            number, scale = _split_number(raw, _SIZE_UNITS, "a size like 16384, '64KiB' or '1MiB'")
            value = number * (scale or 1)
            if value != int(value):
                raise ValueError(f"must be a whole number of bytes {_got(raw)}")
            value = int(value)
        else:
            value = _int_of(raw, "a size like 16384, '64KiB' or '1MiB'")
        _check_range(value, self.low, self.high, " bytes")
        if value % self.multiple_of:
            raise ValueError(f"must be a multiple of {self.multiple_of} bytes {_got(raw)}")
        return value

    def describe(self) -> str:
        multiple = f", a multiple of {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"size {_bounds(self.low, self.high, human_size)} bytes{multiple}"


@dataclass(frozen=True)
class DurationMs:
    """Whole milliseconds: a bare number is ms (Kafka's `*.ms` keys); "5s", "2m" convert."""

    low: int = 0
    high: int = INT64_MAX

    def parse(self, raw: Any) -> int:
        if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
            number, scale = _split_number(raw, _DURATION_MS, "a duration like 500, '500ms' or '5s'")
            value = number * (scale or 1)
            if value != int(value):
                raise ValueError(f"must be a whole number of milliseconds {_got(raw)}")
            value = int(value)
        else:
            value = _int_of(raw, "a duration in ms like 500, or '500ms' or '5s'")
        _check_range(value, self.low, self.high, " ms")
        return value

    def describe(self) -> str:
        return f"duration {_bounds(self.low, self.high)} ms"


@dataclass(frozen=True)
class DurationS:
    """Seconds as a float: a bare number is seconds; "500ms", "30s", "2m" convert."""

    low: float = 0.0
    high: float = 86_400.0

    def parse(self, raw: Any) -> float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            number, scale_ms = _split_number(raw, _DURATION_MS, "a duration like '30s' or '500ms'")
            value = number * scale_ms / 1000 if scale_ms else number
        else:
            raise ValueError(f"must be a duration like 30, '30s' or '500ms' {_got(raw)}")
        _check_range(value, self.low, self.high, " s")
        return value

    def describe(self) -> str:
        return f"duration {self.low:g}..{self.high:g} s"


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of names; ``options`` maps each accepted spelling to its value."""

    options: Mapping[str, Any]
    case_sensitive: bool = True
    nullable: bool = False  # null means "not set"
    hint: str = ""  # said after a refused value, e.g. what an older spelling means now

    def parse(self, raw: Any) -> Any:
        if raw is None and self.nullable:
            return None
        # YAML reads `acks: 1` as an int; Kafka's own configs are strings, so compare as text.
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ValueError(self._refusal(raw))
        text = str(raw).strip()
        for name, value in self.options.items():
            if text == name or (not self.case_sensitive and text.lower() == name.lower()):
                return value
        raise ValueError(self._refusal(raw))

    def _refusal(self, raw: Any) -> str:
        hint = f"; {self.hint}" if self.hint else ""
        return f"must be one of {', '.join(self.options)} {_got(raw)}{hint}"

    def describe(self) -> str:
        return "one of " + ", ".join(self.options) + (" or null" if self.nullable else "")


@dataclass(frozen=True)
class Text:
    pattern: str = r".*"
    max_len: int = 255
    what: str = "a string"

    def parse(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise ValueError(f"must be {self.what} {_got(raw)}")
        if len(raw.encode()) > self.max_len or not re.fullmatch(self.pattern, raw):
            raise ValueError(f"must be {self.what} {_got(raw)}")
        return raw

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class OptionalName:
    """A name of ``Text``'s rules (its pattern), or null (the setting is off)."""

    text: Text = Text()

    def parse(self, raw: Any) -> str | None:
        return None if raw is None else self.text.parse(raw)

    def describe(self) -> str:
        return f"{self.text.describe()} or null"


@dataclass(frozen=True)
class OptionalGroup:
    """A group name or numeric gid, or null for "the daemon's own group"."""

    def parse(self, raw: Any) -> str | int | None:
        if raw is None:
            return None
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if isinstance(raw, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", raw):
            return raw
        raise ValueError(f"must be a group name, a gid or null {_got(raw)}")

    def describe(self) -> str:
        return "group name, gid or null"


@dataclass(frozen=True)
class FileMode:
    """Permission bits: an int (YAML reads an unquoted 0660 as octal) or a string "0660"."""

    def parse(self, raw: Any) -> int:
        if isinstance(raw, str) and re.fullmatch(r"\s*(0o?)?[0-7]{1,4}\s*", raw):
            value = int(raw.strip().removeprefix("0o"), 8)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        else:
            raise ValueError(f"must be an octal mode like '0660' {_got(raw)}")
        # A socket needs only rwx bits; a larger int is almost always `mode: 660` written as
        # decimal (= 0o1224), so refuse it rather than set surprising permissions.
        if not 0 <= value <= 0o777:
            raise ValueError(f"must be at most 0777; quote octal modes, e.g. '0660' {_got(raw)}")
        return value

    def describe(self) -> str:
        return "octal mode, e.g. '0660'"


def parse_host_port(text: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to ``(host, port)``; raises ValueError."""
    match = re.fullmatch(r"\s*(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})\s*", text)
    if not match:
        raise ValueError(f"must be host:port {_got(text)}")
    host, port = match.group(1) or match.group(2), int(match.group(3))
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"port must be between {lowest} and 65535 {_got(text)}")
    return host, port


@dataclass(frozen=True)
class HostPort:
    allow_port_zero: bool = False  # port 0 = "any free port", useful for tests

    def parse(self, raw: Any) -> tuple[str, int]:
        if isinstance(raw, (tuple, list)) and len(raw) == 2 and isinstance(raw[0], str):
            # (host, port) as Python callers hold it; port is checked by the string form.
            host, port = raw
            raw = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not isinstance(raw, str):
            raise ValueError(f"must be host:port {_got(raw)}")
        return parse_host_port(raw, allow_port_zero=self.allow_port_zero)

    def describe(self) -> str:
        return "host:port"


@dataclass(frozen=True)
class OptionalHostPort:
    """``host:port`` or null (off)."""

    def parse(self, raw: Any) -> tuple[str, int] | None:
        return None if raw is None else HostPort().parse(raw)

    def describe(self) -> str:
        return "host:port or null"


EMBEDDED = "embedded"


@dataclass(frozen=True)
class ServerList:
    """A YAML list or a comma-separated string of host:port (Kafka's Type.LIST).

    The single word ``embedded`` parses to the empty tuple: "no cluster given, start the local
    development broker" (the supervisor fills in its address).
    """

    def parse(self, raw: Any) -> tuple[tuple[str, int], ...]:
        if isinstance(raw, str):
            if raw.strip() == EMBEDDED:
                return ()
            items: list[Any] = [part for part in raw.split(",") if part.strip()]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise ValueError(f"must be a list or comma-separated string of host:port {_got(raw)}")
        if not items:
            raise ValueError("must name at least one host:port, or be 'embedded'")
        servers = tuple(HostPort().parse(item) for item in items)
        if len(set(servers)) != len(servers):
            raise ValueError(f"must not repeat a server {_got(raw)}")
        return servers

    def describe(self) -> str:
        return "list of host:port, or 'embedded'"


def usable_cpus() -> int:
    """The CPUs this process may run on (honours taskset and cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_worker_count(cpus: int) -> int:
    """``workers.count: auto`` on ``cpus`` usable CPUs: one fewer, at least one.

    Ingest is on the path of every record (at 10k records/s through the Kafka listener it
    takes more CPU than any worker), so W = CPUs would put W + 1 busy processes on W CPUs and
    every wake-up of the pipeline would more often wait for a CPU. And a Kafka client's
    request spanning partitions of every worker wakes every worker: per request, each worker
    more costs a wake-up there and back. On 2 CPUs, 1 worker instead of 2 cut the p50 added
    through the listener at 100k records/s from +3.1 to +1.9 ms and kpd's CPU per record by
    10-20 % at every rate, at the same single-app throughput (docs/performance.md)."""
    return max(1, cpus - 1)


@dataclass(frozen=True)
class WorkerCount:
    high: int = 1024

    def parse(self, raw: Any) -> int:
        if raw == "auto":
            return auto_worker_count(usable_cpus())
        value = _int_of(raw, "a positive integer or 'auto'")
        _check_range(value, 1, self.high, "")
        return value

    def describe(self) -> str:
        return f"int 1..{self.high} or 'auto' (= usable CPUs - 1, at least 1)"


@dataclass(frozen=True)
class TopicPatterns:
    """Topic names or glob patterns (``*`` any run, ``?`` one character)."""

    def parse(self, raw: Any) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"must be a non-empty list of topic names or patterns {_got(raw)}")
        for item in raw:
            if not isinstance(item, str) or not _TOPIC_PATTERN.match(item):
                raise ValueError(
                    f"entries must be topic names or patterns of [a-zA-Z0-9._-*?] {_got(item)}"
                )
        return tuple(raw)

    def describe(self) -> str:
        return "list of topic names or globs"


@dataclass(frozen=True)
class FsyncPolicy:
    """``never``, ``always`` or an interval: how often ring files are synced to the disk.

    Parses to ``"never"``, ``"always"`` or the interval in whole milliseconds (an int >= 1).
    """

    def parse(self, raw: Any) -> str | int:
        if raw in ("never", "always"):
            return raw
        try:
            return DurationMs(1, 3_600_000).parse(raw)
        except ValueError:
            raise ValueError(
                f"must be never, always or an interval like 100ms or '1s' {_got(raw)}"
            ) from None

    def describe(self) -> str:
        return "never, always, or an interval 1 ms..1 h"


class Required:
    """Type of the REQUIRED marker default: the setting has none and must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = Required()


@dataclass(frozen=True)
class OptionalSecret:
    """A secret (see ``daemon.settings.secret``), or null for none."""

    def parse(self, raw: Any) -> Secret | None:
        return None if raw is None else parse_secret(raw)

    def describe(self) -> str:
        return "secret: string, {file: PATH} or {credential: NAME}; or null"


@dataclass(frozen=True)
class OptionalPath:
    """A file path, or null. Whether the file is usable is checked where it is opened."""

    what: str = "a file path"

    def parse(self, raw: Any) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
            raise ValueError(f"must be {self.what} or null {_got(raw)}")
        return raw

    def describe(self) -> str:
        return f"{self.what} or null"


@dataclass(frozen=True)
class OptionalSize:
    """A ``Size``, or null ("not set": a finalize rule derives it)."""

    size: Size

    def parse(self, raw: Any) -> int | None:
        return None if raw is None else self.size.parse(raw)

    def describe(self) -> str:
        return f"{self.size.describe()}, or null"


@dataclass(frozen=True)
class OptionalText:
    max_len: int = 4096
    what: str = "a string"
    min_len: int = 0

    def parse(self, raw: Any) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not self.min_len <= len(raw.encode()) <= self.max_len:
            raise ValueError(f"must be {self.what} or null {_got(raw)}")
        return raw

    def describe(self) -> str:
        return f"{self.what} or null"


@dataclass(frozen=True)
class KeyValues:
    """librdkafka's ``key=value,key2=value2`` (or a YAML mapping) of plain strings."""

    def parse(self, raw: Any) -> tuple[tuple[str, str], ...]:
        if raw is None or raw == "":
            return ()
        if isinstance(raw, str):
            # librdkafka separates sasl.oauthbearer.config's pairs by spaces, extensions' by
            # commas; both are accepted for both (neither allows either in a value).
            pairs = [part.partition("=") for part in re.split(r"[,\s]+", raw) if part]
            if any(not sep or not key for key, sep, _ in pairs):
                raise ValueError(f"must be key=value pairs {_got(raw)}")
            items = [(key.strip(), value.strip()) for key, _, value in pairs]
        elif isinstance(raw, dict):
            items = [(str(key), str(value)) for key, value in raw.items()]
        else:
            raise ValueError(f"must be key=value,... or a mapping {_got(raw)}")
        for key, _ in items:
            if not re.fullmatch(r"[A-Za-z]+", key) or key == "auth":
                raise ValueError(f"keys must be letters only and not 'auth' (got {key!r})")
        return tuple(items)

    def describe(self) -> str:
        return "key=value,... or a mapping"


@dataclass(frozen=True)
class SubSetting:
    """One key of an ``OptionalBlock``: its value type, default (raw YAML, or REQUIRED) and doc."""

    key: str
    kind: Any
    default: Any
    doc: str


@dataclass(frozen=True)
class OptionalBlock:
    """A small mapping of named sub-settings, or null: an optional feature configured by a few
    keys of its own (``socket.lines``). Each key is parsed by its own value type, so a block
    is checked exactly like a section; ``build`` receives the parsed values by key."""

    keys: tuple[SubSetting, ...]
    build: Any  # a callable taking the parsed values as keyword arguments
    what: str = "a mapping"

    def parse(self, raw: Any) -> Any:
        if raw is None:
            return None
        names = [sub.key for sub in self.keys]
        if not isinstance(raw, dict):
            raise ValueError(f"must be {self.what} of {', '.join(names)}, or null {_got(raw)}")
        for key in raw:
            if key not in names:
                raise ValueError(f"unknown key {key!r} (known: {', '.join(names)})")
        values = {}
        for sub in self.keys:
            if sub.key in raw:
                try:
                    values[sub.key] = sub.kind.parse(raw[sub.key])
                except ValueError as exc:
                    raise ValueError(f"{sub.key}: {exc}") from None
            elif sub.default is REQUIRED:
                raise ValueError(f"{sub.key} is required")
            else:
                values[sub.key] = sub.kind.parse(sub.default)
        return self.build(**values)

    def describe(self) -> str:
        parts = []
        for sub in self.keys:
            if sub.default is REQUIRED:
                default = "required"
            else:
                default = "default " + ("null" if sub.default is None else f"{sub.default}")
            parts.append(f"`{sub.key}` ({sub.kind.describe()}, {default}): {sub.doc}")
        return f"null, or {self.what}: " + "; ".join(parts)
