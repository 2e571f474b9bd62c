"""Avro binary codec compiled once per (schema, model) pair.

Why not fastavro alone: its ``schemaless_writer`` wants a dict (a pydantic
``model_dump`` first, ~1.2 µs) and walks the schema on every record (~3 µs);
its reader returns dicts that must be validated again into models. The
produce hot path of the event backbone must stay within a few µs per record
(DESIGN.md, "Costs per record"), so this module turns a schema into straight-
line Python once — attribute reads and byte appends, no per-record schema
walk — and builds models without re-validating what Avro already typed.
fastavro stays the reference: a hypothesis test proves both agree byte for byte.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from buildkit.contracts.avro_model import model_avro_schema

Encoder = Callable[[Any, bytearray], None]
Decoder = Callable[[bytes | memoryview, int], tuple[Any, int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from
_pack_float = struct.Struct("<f").pack
_unpack_float = struct.Struct("<f").unpack_from

# Zig-zag varints of small numbers, precomputed: most ints in events are small.
_SMALL = {n: None for n in range(-1024, 1024)}


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_BYTES = {n: _varint(n) for n in _SMALL}


def write_long(buf: bytearray, n: int) -> None:
    """Append ``n`` as an Avro zig-zag varint."""
    small = _SMALL_BYTES.get(n)
    if small is not None:
        buf += small
        return
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit an Avro long")
    buf += _varint(n)


def write_string(buf: bytearray, s: str) -> None:
    """Append ``s`` as length-prefixed UTF-8."""
    b = s.encode()
    write_long(buf, len(b))
    buf += b


def write_bytes(buf: bytearray, b: bytes) -> None:
    """Append ``b`` length-prefixed."""
    write_long(buf, len(b))
    buf += b


def read_long(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read a zig-zag varint at ``pos``; return it and the next position."""
    b = data[pos]
    pos += 1
    z = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        shift += 7
    return (z >> 1) ^ -(z & 1), pos


def read_string(data: bytes | memoryview, pos: int) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string."""
    n, pos = read_long(data, pos)
    if n < 0:
        # Else the position moves backwards: a malformed record could loop for ever.
        raise ValueError(f"negative string length {n}")
    end = pos + n
    return bytes(data[pos:end]).decode(), end


def read_bytes(data: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    """Read length-prefixed bytes."""
    n, pos = read_long(data, pos)
    if n < 0:
        raise ValueError(f"negative bytes length {n}")
    end = pos + n
    return bytes(data[pos:end]), end


def ts_to_millis(value: datetime) -> int:
    """Milliseconds since the epoch, exact; a naive datetime counts as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


_from_ts = datetime.fromtimestamp


def millis_to_ts(ms: int) -> datetime:
    """The UTC datetime ``ms`` milliseconds after the epoch."""
    if -4_000_000_000_000 < ms < 4_000_000_000_000:
        # Within ±126 years of 1970 a float second has sub-0.5 µs error, so whole
        # milliseconds survive fromtimestamp's rounding exactly; 3x faster.
        return _from_ts(ms / 1000, UTC)
    return _EPOCH + timedelta(milliseconds=ms)


_set = object.__setattr__


def construct(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Build ``model`` from already-typed values without validating them again.

    This is what pydantic's ``model_construct`` does for a model without private
    attributes or extras, less its per-call defaults handling (every field is
    present: the Avro record carries them all), at a fifth of the cost.
    """
    obj = model.__new__(model)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


class _Compiler:
    """Generates the source of one encoder and one decoder for a schema."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {
            "write_long": write_long,
            "write_string": write_string,
            "write_bytes": write_bytes,
            "read_long": read_long,
            "read_string": read_string,
            "read_bytes": read_bytes,
            "pack_double": _pack_double,
            "unpack_double": _unpack_double,
            "pack_float": _pack_float,
            "unpack_float": _unpack_float,
            "ts_to_millis": ts_to_millis,
            "millis_to_ts": millis_to_ts,
            "construct": construct,
            "OverflowError": OverflowError,
        }
        self.named: dict[str, dict[str, Any]] = {}
        self.counter = 0
        self.functions: list[str] = []

    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # encoder ------------------------------------------------------------------
    def enc(self, schema: Any, expr: str, lines: list[str], indent: str, model: Any) -> None:
        """Append statements that write ``expr`` (of Avro type ``schema``) to ``buf``."""
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            if len(schema) != 2 or "null" not in schema:
                raise TypeError(f"only [null, X] unions are supported, got {schema}")
            null_index = schema.index("null")
            other = schema[1 - null_index]
            var = self._name("u")
            lines.append(f"{indent}{var} = {expr}")
            lines.append(f"{indent}if {var} is None:")
            lines.append(f"{indent}    buf += {bytes([null_index * 2])!r}")
            lines.append(f"{indent}else:")
            lines.append(f"{indent}    buf += {bytes([(1 - null_index) * 2])!r}")
            self.enc(other, var, lines, indent + "    ", _optional_inner(model))
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if kind == "long" and logical == "timestamp-millis":
            lines.append(f"{indent}write_long(buf, ts_to_millis({expr}))")
        elif kind in ("long", "int"):
            lines.append(f"{indent}write_long(buf, {expr})")
        elif kind == "string":
            lines.append(f"{indent}write_string(buf, {expr})")
        elif kind == "bytes":
            lines.append(f"{indent}write_bytes(buf, {expr})")
        elif kind == "boolean":
            lines.append(f"{indent}buf.append(1 if {expr} else 0)")
        elif kind == "double":
            lines.append(f"{indent}buf += pack_double({expr})")
        elif kind == "float":
            lines.append(f"{indent}buf += pack_float({expr})")
        elif kind == "null":
            pass
        elif kind == "enum":
            self._register(schema)
            table = self._name("sym")
            self.env[table] = {s: i for i, s in enumerate(schema["symbols"])}
            var = self._name("e")
            lines.append(f"{indent}{var} = {expr}")
            lines.append(f"{indent}write_long(buf, {table}[getattr({var}, 'value', {var})])")
        elif kind == "array":
            var, item = self._name("a"), self._name("i")
            lines.append(f"{indent}{var} = {expr}")
            lines.append(f"{indent}if {var}:")
            lines.append(f"{indent}    write_long(buf, len({var}))")
            lines.append(f"{indent}    for {item} in {var}:")
            self.enc(schema["items"], item, lines, indent + "        ", _args(model, 0))
            lines.append(f"{indent}buf.append(0)")
        elif kind == "map":
            var, k, v = self._name("m"), self._name("k"), self._name("v")
            lines.append(f"{indent}{var} = {expr}")
            lines.append(f"{indent}if {var}:")
            lines.append(f"{indent}    write_long(buf, len({var}))")
            lines.append(f"{indent}    for {k}, {v} in {var}.items():")
            lines.append(f"{indent}        write_string(buf, {k})")
            self.enc(schema["values"], v, lines, indent + "        ", _args(model, 1))
            lines.append(f"{indent}buf.append(0)")
        elif kind == "record":
            fn = self.record_encoder(schema, model)
            lines.append(f"{indent}{fn}({expr}, buf)")
        else:
            raise TypeError(f"unsupported Avro type {schema!r}")

    def record_encoder(self, schema: dict[str, Any], model: Any) -> str:
        self._register(schema)
        fn = self._name("enc_")
        lines = [f"def {fn}(obj, buf):"]
        fields = getattr(model, "model_fields", {})
        for field in schema["fields"]:
            sub = _annotation(fields.get(field["name"]))
            self.enc(field["type"], f"obj.{field['name']}", lines, "    ", sub)
        if len(lines) == 1:
            lines.append("    pass")
        self.functions.append("\n".join(lines))
        return fn

    # decoder ------------------------------------------------------------------
    def dec(self, schema: Any, target: str, lines: list[str], indent: str, model: Any) -> None:
        """Append statements that read a value of ``schema`` into variable ``target``."""
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            null_index = schema.index("null")
            other = schema[1 - null_index]
            idx = self._name("b")
            lines.append(f"{indent}{idx}, pos = read_long(data, pos)")
            lines.append(f"{indent}if {idx} == {null_index}:")
            lines.append(f"{indent}    {target} = None")
            lines.append(f"{indent}else:")
            self.dec(other, target, lines, indent + "    ", _optional_inner(model))
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if kind == "long" and logical == "timestamp-millis":
            lines.append(f"{indent}{target}, pos = read_long(data, pos)")
            lines.append(f"{indent}{target} = millis_to_ts({target})")
        elif kind in ("long", "int"):
            lines.append(f"{indent}{target}, pos = read_long(data, pos)")
        elif kind == "string":
            lines.append(f"{indent}{target}, pos = read_string(data, pos)")
        elif kind == "bytes":
            lines.append(f"{indent}{target}, pos = read_bytes(data, pos)")
        elif kind == "boolean":
            lines.append(f"{indent}{target} = data[pos] == 1")
            lines.append(f"{indent}pos += 1")
        elif kind == "double":
            lines.append(f"{indent}{target}, = unpack_double(data, pos)")
            lines.append(f"{indent}pos += 8")
        elif kind == "float":
            lines.append(f"{indent}{target}, = unpack_float(data, pos)")
            lines.append(f"{indent}pos += 4")
        elif kind == "null":
            lines.append(f"{indent}{target} = None")
        elif kind == "enum":
            self._register(schema)
            table = self._name("symbols")
            enum_type = model if isinstance(model, type) and issubclass(model, enum.Enum) else None
            symbols = schema["symbols"]
            self.env[table] = tuple(enum_type(s) for s in symbols) if enum_type else tuple(symbols)
            idx = self._name("n")
            lines.append(f"{indent}{idx}, pos = read_long(data, pos)")
            lines.append(f"{indent}{target} = {table}[{idx}]")
        elif kind in ("array", "map"):
            is_map = kind == "map"
            count, item, key = self._name("c"), self._name("it"), self._name("key")
            lines.append(f"{indent}{target} = {{}}" if is_map else f"{indent}{target} = []")
            lines.append(f"{indent}{count}, pos = read_long(data, pos)")
            lines.append(f"{indent}while {count}:")
            lines.append(f"{indent}    if {count} < 0:")
            lines.append(f"{indent}        {count} = -{count}")
            lines.append(f"{indent}        _, pos = read_long(data, pos)")
            lines.append(f"{indent}    for _ in range({count}):")
            inner = indent + "        "
            if is_map:
                lines.append(f"{inner}{key}, pos = read_string(data, pos)")
                self.dec(schema["values"], item, lines, inner, _args(model, 1))
                lines.append(f"{inner}{target}[{key}] = {item}")
            else:
                self.dec(schema["items"], item, lines, inner, _args(model, 0))
                lines.append(f"{inner}{target}.append({item})")
            lines.append(f"{indent}    {count}, pos = read_long(data, pos)")
        elif kind == "record":
            fn = self.record_decoder(schema, model)
            lines.append(f"{indent}{target}, pos = {fn}(data, pos)")
        else:
            raise TypeError(f"unsupported Avro type {schema!r}")

    def record_decoder(self, schema: dict[str, Any], model: Any) -> str:
        self._register(schema)
        fn = self._name("dec_")
        lines = [f"def {fn}(data, pos):"]
        fields = getattr(model, "model_fields", {})
        names = []
        for i, field in enumerate(schema["fields"]):
            var = f"f{i}"
            names.append((field["name"], var))
            sub = _annotation(fields.get(field["name"]))
            self.dec(field["type"], var, lines, "    ", sub)
        values = "{" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}"
        if isinstance(model, type) and issubclass(model, BaseModel):
            cls = self._name("Model")
            self.env[cls] = model
            lines.append(f"    return construct({cls}, {values}), pos")
        else:
            lines.append(f"    return {values}, pos")
        self.functions.append("\n".join(lines))
        return fn

    def _register(self, schema: dict[str, Any]) -> None:
        name = schema["name"]
        namespace = schema.get("namespace")
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        self.named.setdefault(full, schema)
        self.named.setdefault(name, schema)

    def build(self, entry: str) -> Any:
        source = "\n\n".join(self.functions)
        exec(compile(source, "<avro-codec>", "exec"), self.env)  # noqa: S102 — generated from a schema, not user text
        return self.env[entry]


def _annotation(info: Any) -> Any:
    return None if info is None else info.annotation


def _optional_inner(annotation: Any) -> Any:
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else None


def _args(annotation: Any, index: int) -> Any:
    import typing

    args = typing.get_args(annotation)
    return args[index] if len(args) > index else None


class Codec:
    """Encoder and decoder for one record schema, bound to a model (or to dicts)."""

    def __init__(self, schema: dict[str, Any], model: type[BaseModel] | None = None) -> None:
        self.schema = schema
        self.model = model
        enc = _Compiler()
        self._encode: Encoder = enc.build(enc.record_encoder(schema, model))
        dec = _Compiler()
        self._decode: Decoder = dec.build(dec.record_decoder(schema, model))

    @classmethod
    def for_model(cls, model: type[BaseModel]) -> Codec:
        """A codec for the model's own Avro schema."""
        schema = getattr(model, "avro_schema", None)
        return cls(schema() if schema else model_avro_schema(model), model)

    def encode_into(self, value: Any, buf: bytearray) -> None:
        """Append the Avro binary encoding of ``value`` to ``buf``."""
        self._encode(value, buf)

    def encode(self, value: Any) -> bytes:
        """The Avro binary encoding of ``value``."""
        buf = bytearray()
        self._encode(value, buf)
        return bytes(buf)

    def decode(self, data: bytes | memoryview, pos: int = 0) -> Any:
        """Decode one value starting at ``pos``.

        Truncated or malformed input and trailing bytes raise
        :class:`buildkit.errors.SerializationError` (also a confluent-kafka
        ``SerializationError``), so a consumer can dead-letter the record.
        """
        # One try around the whole record: free on the happy path (3.11+), and
        # the generated per-field code stays free of checks.
        try:
            value, end = self._decode(data, pos)
        except (IndexError, ValueError, OverflowError, struct.error) as exc:
            raise self._malformed(data, pos, f"{type(exc).__name__}: {exc}") from exc
        if end != len(data):
            # A length prefix past the end slices short instead of failing: catch it here.
            if end > len(data):
                raise self._malformed(data, pos, f"needs {end - len(data)} more byte(s)")
            raise self._malformed(data, pos, f"{len(data) - end} unexpected trailing byte(s)")
        return value

    def _malformed(self, data: bytes | memoryview, pos: int, detail: str) -> Exception:
        # Imported here: buildkit.errors loads confluent_kafka, too heavy for import time.
        from buildkit.errors import SerializationError

        return SerializationError(
            f"cannot decode {self.schema.get('name', 'record')}: the {len(data) - pos}-byte "
            f"Avro record is truncated or malformed ({detail}) — was it written with this schema?"
        )
