"""How ``kpd send`` reads records from its input: plain lines or JSON lines.

* ``lines``: each line is a record's value (the newline stripped); with a key separator, the
  text before its first occurrence is the key.
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

__all__ = ["FORMATS", "InputError", "InputRecord", "read_records"]

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


def read_records(
    lines: Iterable[bytes], fmt: str = "lines", key_separator: bytes | None = None
) -> Iterator[InputRecord]:
    """The records of ``lines`` (bytes, as from ``sys.stdin.buffer``); raises InputError."""
    if fmt == "lines":
        yield from _plain(lines, key_separator)
    elif fmt == "jsonl":
        yield from _json_lines(lines)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _plain(lines: Iterable[bytes], separator: bytes | None) -> Iterator[InputRecord]:
    for line in lines:
        line = line.rstrip(b"\n")
        key = None
        if separator is not None and separator in line:
            key, line = line.split(separator, 1)
        yield InputRecord(line, key)


def _json_lines(lines: Iterable[bytes]) -> Iterator[InputRecord]:
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
