"""Key and value serializers, shaped like Kafka's: ``serializer(obj) -> bytes | None``.

A serializer maps None to None (a null key, or a tombstone value), as Kafka's do. Any plain
callable with that contract works too. Pure; imports nothing from kpd.
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["BytesSerializer", "IntegerSerializer", "JsonSerializer", "StringSerializer"]

_INT32 = struct.Struct(">i")


class BytesSerializer:
    """Bytes-like objects as they are (bytearray and memoryview are copied to bytes)."""

    def __call__(self, obj: bytes | bytearray | memoryview | None) -> bytes | None:
        if obj is None or type(obj) is bytes:
            return obj
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        raise TypeError(f"BytesSerializer takes bytes-like objects, not {type(obj).__name__}")


class StringSerializer:
    """``str`` encoded with ``encoding`` (Kafka's StringSerializer defaults to UTF-8)."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def __call__(self, obj: str | None) -> bytes | None:
        if obj is None:
            return None
        if not isinstance(obj, str):
            raise TypeError(f"StringSerializer takes str, not {type(obj).__name__}")
        return obj.encode(self.encoding)


class JsonSerializer:
    """Any JSON-serializable object as compact UTF-8 JSON. None stays null (no record body);
    to send the JSON text ``null``, pass ``b"null"`` without a serializer."""

    def __init__(self, **dumps_options: Any) -> None:
        self._options = {"separators": (",", ":"), "ensure_ascii": False, **dumps_options}

    def __call__(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        return json.dumps(obj, **self._options).encode("utf-8")


class IntegerSerializer:
    """A 32-bit signed int as 4 big-endian bytes, like Kafka's IntegerSerializer."""

    def __call__(self, obj: int | None) -> bytes | None:
        if obj is None:
            return None
        if not isinstance(obj, int) or isinstance(obj, bool):
            raise TypeError(f"IntegerSerializer takes int, not {type(obj).__name__}")
        if not -(1 << 31) <= obj < 1 << 31:
            raise ValueError(f"{obj} does not fit Kafka's 32-bit IntegerSerializer")
        return _INT32.pack(obj)
