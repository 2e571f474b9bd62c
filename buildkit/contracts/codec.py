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

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def write_varint(buf: bytearray, n: int) -> None:
    """Append ``n`` as a zig-zag varint, byte by byte (the general path)."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    while z > 0x7F:
        buf.append((z & 0x7F) | 0x80)
        z >>= 7
    buf.append(z)


def _varint(n: int) -> bytes:
    buf = bytearray()
    write_varint(buf, n)
    return bytes(buf)


# Zig-zag varints of -1024..1023, precomputed and indexed by n + 1024: most ints
# and string lengths in events are small, and a tuple lookup beats any arithmetic.
_SMALL_OFFSET = 1024
_SMALL = tuple(_varint(n) for n in range(-_SMALL_OFFSET, _SMALL_OFFSET))


def write_long(buf: bytearray, n: int) -> None:
    """Append ``n`` as an Avro zig-zag varint."""
    if -_SMALL_OFFSET <= n < _SMALL_OFFSET:
        buf += _SMALL[n + _SMALL_OFFSET]
    else:
        write_varint(buf, n)


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
    return str(data[pos:end], "utf-8"), end


def read_bytes(data: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    """Read length-prefixed bytes."""
    n, pos = read_long(data, pos)
    if n < 0:
        raise ValueError(f"negative bytes length {n}")
    end = pos + n
    return bytes(data[pos:end]), end


def ts_to_millis(value: datetime) -> int:
    """Milliseconds since the epoch, floored like fastavro; a naive datetime counts as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    micros = round(value.timestamp() * 1_000_000)
    if -(1 << 52) < micros < (1 << 52):
        # Below 2**52 µs (±142 years) the float is exact to well under 0.5 µs, so the
        # rounded microseconds are exact; three times faster than datetime arithmetic.
        return micros // 1000
    return (value - _EPOCH) // _MS


_from_ts = datetime.fromtimestamp


def millis_to_ts(ms: int) -> datetime:
    """The UTC datetime ``ms`` milliseconds after the epoch."""
    if -4_000_000_000_000 < ms < 4_000_000_000_000:
        # Within ±126 years of 1970 a float second has sub-0.5 µs error, so whole
        # milliseconds survive fromtimestamp's rounding exactly; 3x faster.
        return _from_ts(ms / 1000, UTC)
    return _EPOCH + timedelta(milliseconds=ms)


# pydantic v2 keeps a model's state in four slots of BaseModel; setting them through
# their descriptors is what ``model_construct`` does, minus its per-call work.
_SLOTS = BaseModel.__dict__
_new = object.__new__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def construct(
    model: type[BaseModel], values: dict[str, Any], fields: set[str] | None = None
) -> BaseModel:
    """Build ``model`` from already-typed values without validating them again.

    This is what pydantic's ``model_construct`` does for a model without private
    attributes or extras, less its per-call defaults handling (every field is
    present: the Avro record carries them all), at a fifth of the cost.
    ``fields`` is the set of field names, when the caller has it at hand.
    """
    obj = _new(model)
    _set_dict(obj, values)
    _set_fields(obj, set(values) if fields is None else fields.copy())
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


class _Compiler:
    """Generates the source of one encoder and one decoder for a schema."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {
            "write_long": write_long,
            "write_varint": write_varint,
            "SMALL": _SMALL,
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
            "from_ts": _from_ts,
            "UTC": UTC,
            "construct": construct,
            "OverflowError": OverflowError,
            "ValueError": ValueError,
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
            self._enc_long(f"ts_to_millis({expr})", lines, indent)
        elif kind in ("long", "int"):
            self._enc_long(expr, lines, indent)
        elif kind == "string":
            data = self._name("s")
            lines.append(f"{indent}{data} = {expr}.encode()")
            self._enc_long(f"len({data})", lines, indent)
            lines.append(f"{indent}buf += {data}")
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

    def _enc_long(self, expr: str, lines: list[str], indent: str) -> None:
        # Inlined write_long: most values hit the precomputed table.
        var = self._name("n")
        lines.append(f"{indent}{var} = {expr}")
        lines.append(f"{indent}if -{_SMALL_OFFSET} <= {var} < {_SMALL_OFFSET}:")
        lines.append(f"{indent}    buf += SMALL[{var} + {_SMALL_OFFSET}]")
        lines.append(f"{indent}else:")
        lines.append(f"{indent}    write_varint(buf, {var})")

    def _dec_long(self, target: str, lines: list[str], indent: str) -> None:
        # Inlined read_long for one-byte varints (-64..63), the common case.
        lines.append(f"{indent}{target} = data[pos]")
        lines.append(f"{indent}if {target} < 0x80:")
        lines.append(f"{indent}    {target} = ({target} >> 1) ^ -({target} & 1)")
        lines.append(f"{indent}    pos += 1")
        lines.append(f"{indent}else:")
        lines.append(f"{indent}    {target}, pos = read_long(data, pos)")

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
            # A union index of 0 or 1 is the single zig-zag byte 0 or 2.
            lines.append(f"{indent}{idx} = data[pos]")
            lines.append(f"{indent}pos += 1")
            lines.append(f"{indent}if {idx} == {null_index * 2}:")
            lines.append(f"{indent}    {target} = None")
            lines.append(f"{indent}elif {idx} == {(1 - null_index) * 2}:")
            self.dec(other, target, lines, indent + "    ", _optional_inner(model))
            lines.append(f"{indent}else:")
            lines.append(
                f"{indent}    raise ValueError(f'union branch byte {{{idx}}} is not 0 or 2')"
            )
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if kind == "long" and logical == "timestamp-millis":
            lines.append(f"{indent}{target}, pos = read_long(data, pos)")
            lines.append(f"{indent}if -4_000_000_000_000 < {target} < 4_000_000_000_000:")
            lines.append(f"{indent}    {target} = from_ts({target} / 1000, UTC)")
            lines.append(f"{indent}else:")
            lines.append(f"{indent}    {target} = millis_to_ts({target})")
        elif kind in ("long", "int"):
            self._dec_long(target, lines, indent)
        elif kind == "string":
            size = self._name("z")
            self._dec_long(size, lines, indent)
            lines.append(f"{indent}if {size} < 0:")
            lines.append(f"{indent}    raise ValueError(f'negative string length {{{size}}}')")
            lines.append(f"{indent}{target} = str(data[pos:pos + {size}], 'utf-8')")
            lines.append(f"{indent}pos += {size}")
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
            self._dec_long(count, lines, indent)
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
            self._dec_long(count, lines, indent + "    ")
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
            cls, names_set = self._name("Model"), self._name("fields")
            self.env[cls] = model
            self.env[names_set] = {name for name, _ in names}
            lines.append(f"    return construct({cls}, {values}, {names_set}), pos")
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
