"""How ``kpd send --format jsonl`` reads records from its input: JSON lines.

Plain lines (``--format lines``, the default) are cut by ``kpd.lines.LineSender``
itself, in bulk; the rule for them: each line is a record's value (the newline stripped), with
a key separator the text before its first occurrence is the key, and an empty line is no
record (skipped and counted, as on the ``socket.lines`` socket).

* ``jsonl``: each line is one JSON object with optional fields ``key`` and ``value`` (strings
  as UTF-8, or null), ``headers`` (an object, or a list of ``[name, value]`` pairs for repeated
  names; values strings or null), ``partition`` (an int >= 0) and ``timestamp`` (ms since the
  epoch). Blank lines are skipped. Any other field is an error, so a typo is not silently
  dropped.

Pure: no I/O beyond iterating the stream it is given, no daemon imports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["FORMATS", "InputError", "InputRecord", "read_json_records"]

FORMATS = ("lines", "jsonl")
_JSON_FIELDS = frozenset({"key", "value", "headers", "partition", "timestamp"})


class InputError(ValueError):
    """A line that is not a record; ``line`` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class InputRecord:
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] | None = None
    partition: int | None = None
    timestamp: int | None = None


def read_json_records(lines: Iterable[bytes]) -> Iterator[InputRecord]:
    """The records of JSON ``lines`` (bytes, as from ``sys.stdin.buffer``); raises InputError."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InputError(number, f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InputError(number, "expected a JSON object")
        unknown = sorted(set(obj) - _JSON_FIELDS)
        if unknown:
            raise InputError(
                number,
                f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(_JSON_FIELDS))}",
            )
        yield InputRecord(
            value=_text(obj.get("value"), number, "value"),
            key=_text(obj.get("key"), number, "key"),
            headers=_headers(obj.get("headers"), number),
            partition=_int(obj.get("partition"), number, "partition", 0),
            timestamp=_int(obj.get("timestamp"), number, "timestamp", 0),
        )


def _text(value, line: int, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(line, f"{name} must be a string or null, not {type(value).__name__}")
    return value.encode()


def _int(value, line: int, name: str, low: int) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < low:
        raise InputError(line, f"{name} must be an integer >= {low}, not {value!r}")
    return value


def _headers(value, line: int) -> tuple[tuple[str, bytes | None], ...] | None:
    if value is None:
        return None
    pairs = value.items() if isinstance(value, dict) else value
    if not isinstance(pairs, list | type({}.items())):
        raise InputError(line, "headers must be an object or a list of [name, value] pairs")
    headers = []
    for pair in pairs:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InputError(line, f"header {pair!r} is not a [name, value] pair")
        headers.append((pair[0], _text(pair[1], line, f"header {pair[0]!r}")))
    return tuple(headers)
