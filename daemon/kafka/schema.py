"""Declarative Kafka message schemas, compiled once per version into flat codecs (pure).

A schema mirrors Kafka's JSON message specs (apache/kafka
``clients/src/main/resources/common/message/*.json``): a ``Field`` has a type, the versions it
exists in, the versions in which it may be null, a default, and optionally a tag that makes it a
tagged field of the flexible versions (KIP-482). Messages are plain dicts keyed by the snake_case
of the JSON field names.

``compile_struct(fields, version, flexible)`` resolves every version question once and returns a
``CompiledStruct`` holding tuples of ``(key, default, encoder)`` / ``(key, decoder)`` steps, so
encoding a Produce request runs straight-line closures with no per-field version checks.

Rules (from the Kafka protocol guide and KIP-482):

* Encoding ignores keys a version does not have and uses the default for keys the caller left out.
* Decoding returns every field of the schema; fields absent at that version hold their default,
  so callers read one shape whatever version was negotiated.
* In a flexible version, strings, bytes and arrays use the compact forms and every struct —
  including each array element — ends with a tagged-field section. A tagged field is written only
  when it differs from its default; unknown tags are skipped when reading.

Imports only ``primitives``; knows nothing of particular APIs (``messages`` holds those).
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from . import primitives as p
from .primitives import ProtocolError, Reader
from .varint import encode_uvarint

__all__ = [
    "BOOL",
    "BYTES",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "RECORDS",
    "STRING",
    "UUID",
    "Array",
    "CompiledStruct",
    "Field",
    "Struct",
    "compile_struct",
    "parse_versions",
    "snake_case",
]

Encoder = Callable[[object, list], None]
Decoder = Callable[[Reader], object]

_LATEST = 0x7FFF  # "N+" means N up to the highest int16 version


def parse_versions(spec: str) -> range:
    """Kafka's version-range syntax: ``"3+"``, ``"0-3"``, ``"5"`` or ``"none"``."""
    if spec == "none":
        return range(0)
    if spec.endswith("+"):
        return range(int(spec[:-1]), _LATEST + 1)
    low, _, high = spec.partition("-")
    return range(int(low), int(high or low) + 1)


def snake_case(name: str) -> str:
    """``ThrottleTimeMs`` -> ``throttle_time_ms`` (``timeoutMs`` -> ``timeout_ms``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


# --- types ---------------------------------------------------------------------------------------


class _Fixed:
    """A fixed-width, never-null scalar: int8..int64, bool, uuid."""

    def __init__(self, name: str, write: Encoder, read: Decoder, zero, size: int, code=None):
        self.name = name
        self._write = write
        self._read = read
        self._zero = zero
        self.size = size  # bytes on the wire
        self.code = code  # struct format letter for packing a whole int array in one call

    def zero(self):
        return self._zero

    def codec(self, version: int, flexible: bool, nullable: bool) -> tuple[Encoder, Decoder]:
        if nullable:
            raise TypeError(f"{self.name} cannot be nullable")
        return self._write, self._read


class _Sized:
    """A length-prefixed type (string, bytes, records) in its four wire forms."""

    def __init__(self, name: str, forms: dict[tuple[bool, bool], tuple[Encoder, Decoder]], zero):
        self.name = name
        self._forms = forms  # (flexible, nullable) -> (writer, reader)
        self._zero = zero
        self.size = 1  # the smallest encoding (a compact length of 0/1) for array bounds checks

    def zero(self):
        return self._zero

    def codec(self, version: int, flexible: bool, nullable: bool) -> tuple[Encoder, Decoder]:
        return self._forms[flexible, nullable]


INT8 = _Fixed("int8", p.write_int8, Reader.int8, 0, 1, "b")
INT16 = _Fixed("int16", p.write_int16, Reader.int16, 0, 2, "h")
INT32 = _Fixed("int32", p.write_int32, Reader.int32, 0, 4, "i")
INT64 = _Fixed("int64", p.write_int64, Reader.int64, 0, 8, "q")
BOOL = _Fixed("bool", p.write_bool, Reader.bool, False, 1)
UUID = _Fixed("uuid", p.write_uuid, Reader.uuid, uuid.UUID(int=0), 16)

STRING = _Sized(
    "string",
    {
        (False, False): (p.write_string, Reader.string),
        (False, True): (p.write_nullable_string, Reader.nullable_string),
        (True, False): (p.write_compact_string, Reader.compact_string),
        (True, True): (p.write_compact_nullable_string, Reader.compact_nullable_string),
    },
    "",
)
_BYTE_FORMS = {
    (False, False): (p.write_bytes, Reader.bytes),
    (False, True): (p.write_nullable_bytes, Reader.nullable_bytes),
    (True, False): (p.write_compact_bytes, Reader.compact_bytes),
    (True, True): (p.write_compact_nullable_bytes, Reader.compact_nullable_bytes),
}
BYTES = _Sized("bytes", _BYTE_FORMS, b"")
# "records" is bytes on the wire; kpd never parses it here (records.py owns RecordBatch v2).
RECORDS = _Sized("records", _BYTE_FORMS, None)


class Array:
    """``[]T``: an array of scalars or of structs."""

    size = 1

    def __init__(self, element) -> None:
        self.element = element

    def zero(self):
        return []

    def codec(self, version: int, flexible: bool, nullable: bool) -> tuple[Encoder, Decoder]:
        element = self.element
        write_item, read_item = element.codec(version, flexible, False)
        code = getattr(element, "code", None)
        write_length = p.write_array_length

        def encode(value, out: list) -> None:
            if value is None:
                if not nullable:
                    raise ProtocolError("null where the array is not nullable")
                write_length(None, flexible, out)
                return
            write_length(len(value), flexible, out)
            if code is not None:
                # Integer arrays (replica lists, partitions) pack in one call.
                out.append(struct.pack(f">{len(value)}{code}", *value))
            else:
                for item in value:
                    write_item(item, out)

        def decode(reader: Reader):
            count = reader.array_length(flexible, element.size)
            if count is None:
                if nullable:
                    return None
                raise ProtocolError(f"null array at offset {reader.pos} where null is not allowed")
            if code is not None:
                start = reader.skip(count * element.size)
                return list(struct.unpack_from(f">{count}{code}", reader.buf, start))
            return [read_item(reader) for _ in range(count)]

        return encode, decode


class Struct:
    """A nested struct: an array element, or a (tagged) field of struct type."""

    size = 1

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.fields = fields

    def zero(self) -> dict:
        return {f.key: f.default_value() for f in self.fields}

    def codec(self, version: int, flexible: bool, nullable: bool) -> tuple[Encoder, Decoder]:
        if nullable:
            raise TypeError(f"struct {self.name} cannot be nullable")
        compiled = compile_struct(self.fields, version, flexible, self.name)
        return compiled.encode, compiled.decode


_UNSET = object()


@dataclass(frozen=True)
class Field:
    """One field of a Kafka JSON message spec; ``name`` is the JSON (CamelCase) name."""

    name: str
    type: object
    versions: str = "0+"
    nullable: str = "none"
    default: object = _UNSET  # unset: the type's zero ("", 0, False, [], zero UUID)
    tag: int | None = None  # set: a tagged field in the flexible versions of ``versions``
    key: str = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.default, list | dict):
            # Explicit defaults are shared by every decoded message, so they must be immutable;
            # containers get a fresh zero from their type instead.
            raise TypeError(f"{self.name}: explicit defaults must be immutable")
        object.__setattr__(self, "key", snake_case(self.name))

    def default_value(self):
        """The default; a list or dict default is a fresh object, never shared between calls."""
        return self.type.zero() if self.default is _UNSET else self.default

    def present_at(self, version: int) -> bool:
        return version in parse_versions(self.versions)

    def nullable_at(self, version: int) -> bool:
        return version in parse_versions(self.nullable)


# --- compilation ---------------------------------------------------------------------------------


class _FieldError(ProtocolError):
    """An encode failure that collects the path of the field that failed as it unwinds."""

    def __init__(self, key: str, cause: BaseException) -> None:
        super().__init__()
        self.path = [key]
        self.cause = cause

    def __str__(self) -> str:
        return f"{'.'.join(self.path)}: {self.cause}"


# What a wrong value type can raise from struct.pack, str.encode, len() or iteration.
_BAD_VALUE = (struct.error, TypeError, ValueError, AttributeError, OverflowError, KeyError)


class CompiledStruct:
    """A struct's codec for one version. Immutable once built."""

    __slots__ = ("absent", "decoders", "encoders", "flexible", "name", "tag_decoders", "tagged")

    def __init__(self, name, flexible, encoders, decoders, tagged, tag_decoders, absent) -> None:
        self.name = name
        self.flexible = flexible
        self.encoders = encoders  # ((key, default, encode), ...) in wire order
        self.decoders = decoders  # ((key, decode), ...) in wire order
        self.tagged = tagged  # ((tag, key, default, encode), ...) in ascending tag order
        self.tag_decoders = tag_decoders  # {tag: (key, decode)}
        self.absent = absent  # ((key, Field), ...) filled with defaults on decode

    def encode(self, obj: dict, out: list) -> None:
        for key, default, encode in self.encoders:
            try:
                encode(obj.get(key, default), out)
            except _FieldError as exc:
                exc.path.insert(0, key)
                raise
            except _BAD_VALUE as exc:
                raise _FieldError(key, exc) from exc
        if self.flexible:
            self._encode_tags(obj, out)

    def _encode_tags(self, obj: dict, out: list) -> None:
        fields = []
        for tag, key, default, encode in self.tagged:
            value = obj.get(key, default)
            if value == default or (isinstance(default, list) and not value):
                continue  # KIP-482: a tagged field at its default is left out
            parts: list = []
            try:
                encode(value, parts)
            except _FieldError as exc:
                exc.path.insert(0, key)
                raise
            except _BAD_VALUE as exc:
                raise _FieldError(key, exc) from exc
            fields.append((tag, b"".join(parts)))
        out.append(encode_uvarint(len(fields)))
        for tag, data in fields:
            out.append(encode_uvarint(tag))
            out.append(encode_uvarint(len(data)))
            out.append(data)

    def decode(self, reader: Reader) -> dict:
        obj = {}
        for key, decode in self.decoders:
            if type(key) is str:
                obj[key] = decode(reader)
            else:  # a run of fixed-width integers, read with one unpack
                obj.update(zip(key, decode(reader), strict=True))
        for key, spec in self.absent:
            obj[key] = spec.default_value()
        if self.flexible:
            self._decode_tags(reader, obj)
        return obj

    def _decode_tags(self, reader: Reader, obj: dict) -> None:
        pos = reader.pos
        if pos < reader.end and reader.buf[pos] == 0:  # the usual empty section: count 0
            reader.pos = pos + 1
            return
        for tag, sub in reader.tagged_fields():
            known = self.tag_decoders.get(tag)
            if known is None:
                continue  # KIP-482: unknown tags are skipped, that is what makes them optional
            key, decode = known
            obj[key] = decode(sub)
            if sub.remaining:
                raise ProtocolError(f"tagged field {key} (tag {tag}) left {sub.remaining} bytes")


def compile_struct(fields, version: int, flexible: bool, name: str = "body") -> CompiledStruct:
    """Resolve ``fields`` at ``version`` into a ``CompiledStruct``."""
    encoders, decoders, tagged, tag_decoders, absent = [], [], [], [], []
    for spec in fields:
        present = spec.present_at(version)
        if spec.tag is not None and not flexible:
            present = False  # tagged fields exist only in flexible versions
        if not present:
            absent.append((spec.key, spec))
            continue
        encode, decode = spec.type.codec(version, flexible, spec.nullable_at(version))
        default = spec.default_value()
        if spec.tag is None:
            encoders.append((spec.key, default, encode))
            decoders.append((spec.key, decode, getattr(spec.type, "code", None)))
        else:
            tagged.append((spec.tag, spec.key, default, encode))
            tag_decoders.append((spec.tag, spec.key, decode))
            absent.append((spec.key, spec))  # filled first, overwritten if the tag is present
    tagged.sort(key=lambda item: item[0])  # KIP-482: tags are written in ascending order
    tag_decoders = {tag: (key, decode) for tag, key, decode in tag_decoders}
    decoders = _coalesce_fixed(decoders)
    return CompiledStruct(
        name, flexible, tuple(encoders), tuple(decoders), tuple(tagged), tag_decoders, tuple(absent)
    )


def _coalesce_fixed(decoders: list) -> list:
    """``(key, decode)`` steps from ``(key, decode, code)``, where each run of two or more
    consecutive fixed-width integers (``code`` set) becomes one step ``((key, ...), decode)``
    that reads them all with one ``unpack_from``: a Produce response's partition has five in a
    row, one call instead of five per partition."""
    steps: list = []
    run: list = []
    for key, decode, code in [*decoders, (None, None, None)]:
        if code is not None:
            run.append((key, decode, code))
            continue
        if len(run) == 1:
            steps.append(run[0][:2])
        elif run:
            keys = tuple(k for k, _, _ in run)
            steps.append((keys, _fixed_run_decoder("".join(c for _, _, c in run))))
        run = []
        if key is not None:
            steps.append((key, decode))
    return steps


def _fixed_run_decoder(codes: str) -> Decoder:
    codec = struct.Struct(">" + codes)
    size, unpack_from = codec.size, codec.unpack_from

    def decode(reader: Reader) -> tuple:
        return unpack_from(reader.buf, reader.skip(size))

    return decode
