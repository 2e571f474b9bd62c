"""Avro schema compatibility, with messages that say which field breaks and why.

The verdict is always Avro's own: ``avro.compatibility.ReaderWriterCompatibilityChecker``.
Its result, though, merges every problem into unordered sets of messages and
JSON-pointer locations (``/fields/3/type/symbols``) and loses the location
inside unions, so when it says "incompatible" this module walks the two
schemas side by side and asks the checker again at each field, to report each
problem at the deepest field it can name, in words::

    field "status": enum "io.buildkit.bar.Status" in the new schema cannot read
    symbol(s) "TIMED_OUT" written by version 2 (add them, or give the enum a "default")

Reused outside the registry (``buildkit schemas check``): importing this module
does not import the web server.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)
from avro.schema import (
    ArraySchema,
    EnumSchema,
    FixedSchema,
    MapSchema,
    NamedSchema,
    RecordSchema,
    Schema,
    UnionSchema,
)

from buildkit.registry.errors import InvalidCompatibilityLevel
from buildkit.registry.parsing import parse_schema

NEW_SCHEMA_LABEL = "the new schema"


class CompatibilityLevel(enum.StrEnum):
    """Confluent's compatibility levels; ``BACKWARD`` is Confluent's default."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: str | CompatibilityLevel) -> CompatibilityLevel:
        """The level named ``value`` (any case), or :class:`InvalidCompatibilityLevel`."""
        try:
            return cls(str(value).upper())
        except ValueError:
            allowed = ", ".join(level.value for level in cls)
            raise InvalidCompatibilityLevel(
                f"Invalid compatibility level {value!r}: use one of {allowed}"
            ) from None

    @property
    def transitive(self) -> bool:
        """True when every earlier version is checked, not only the latest."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """True when the new schema must read data written with the old ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """True when the old schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


DEFAULT_LEVEL = CompatibilityLevel.BACKWARD


def check_compatibility(
    new_schema_json: str | Schema,
    existing_schema_jsons: Sequence[str | Schema],
    level: CompatibilityLevel | str = DEFAULT_LEVEL,
    *,
    labels: Sequence[str] | None = None,
) -> list[str]:
    """Why ``new_schema_json`` breaks ``level`` against the existing schemas; [] if it doesn't.

    ``existing_schema_jsons`` are the earlier versions, oldest first: the
    non-transitive levels check the last one only, as Confluent does. Each may
    be Avro JSON text or an already parsed ``avro.schema.Schema`` (the registry
    passes parsed schemas whose references are resolved). ``labels`` name the
    existing schemas in messages (default ``"version 1"``, ``"version 2"``, …),
    e.g. file paths. Raises :class:`~buildkit.registry.errors.InvalidSchema`
    when a text does not parse and
    :class:`~buildkit.registry.errors.InvalidCompatibilityLevel` for an unknown level.
    """
    level = CompatibilityLevel.parse(level)
    if labels is None:
        labels = [f"version {n}" for n in range(1, len(existing_schema_jsons) + 1)]
    if len(labels) != len(existing_schema_jsons):
        raise ValueError(f"{len(labels)} labels for {len(existing_schema_jsons)} schemas")
    new = _as_schema(new_schema_json, NEW_SCHEMA_LABEL)
    existing = [
        _as_schema(s, label) for s, label in zip(existing_schema_jsons, labels, strict=True)
    ]
    if level is CompatibilityLevel.NONE or not existing:
        return []
    pairs = list(zip(existing, labels, strict=True))
    if not level.transitive:
        pairs = pairs[-1:]
    problems: list[str] = []
    for old, label in pairs:
        if level.backward:
            problems += explain(new, old, NEW_SCHEMA_LABEL, label)
        if level.forward:
            problems += explain(old, new, label, NEW_SCHEMA_LABEL)
    return list(dict.fromkeys(problems))  # de-duplicated, first-seen order


def is_readable(reader: Schema, writer: Schema) -> bool:
    """True when data written with ``writer`` can be read with ``reader`` (Avro's verdict)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    return result.compatibility is SchemaCompatibilityType.compatible


def explain(reader: Schema, writer: Schema, reader_label: str, writer_label: str) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``, one message per problem."""
    return _Explainer(reader_label, writer_label).walk(reader, writer, "")


class _Explainer:
    """Walks reader and writer side by side, naming the deepest field that breaks."""

    def __init__(self, reader_label: str, writer_label: str) -> None:
        self.r, self.w = reader_label, writer_label

    def walk(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        if is_readable(reader, writer):
            return []
        problems = self._problems(reader, writer, path)
        # Never answer "compatible" when Avro said otherwise: fall back to its own words.
        return problems or [self._checker_words(reader, writer, path)]

    def _problems(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        where = _where(path)
        if isinstance(writer, UnionSchema) and not isinstance(reader, UnionSchema):
            # Every branch the writer may use must be readable.
            return [p for branch in writer.schemas for p in self.walk(reader, branch, path)]
        if isinstance(reader, UnionSchema):
            return self._union(reader, writer, path)
        if reader.type != writer.type:
            return [self._type_mismatch(reader, writer, where)]
        problems = self._names(reader, writer, where)
        if isinstance(reader, RecordSchema) and isinstance(writer, RecordSchema):
            problems += self._record(reader, writer, path)
        elif isinstance(reader, EnumSchema) and isinstance(writer, EnumSchema):
            problems += self._enum(reader, writer, where)
        elif isinstance(reader, FixedSchema) and isinstance(writer, FixedSchema):
            if reader.size != writer.size:
                problems.append(
                    f'{where}: fixed "{reader.fullname}" has size {reader.size} in {self.r} '
                    f"but size {writer.size} in {self.w}"
                )
        elif isinstance(reader, ArraySchema) and isinstance(writer, ArraySchema):
            problems += self.walk(reader.items, writer.items, f"{path}[]")
        elif isinstance(reader, MapSchema) and isinstance(writer, MapSchema):
            problems += self.walk(reader.values, writer.values, f"{path}{{}}")
        return problems

    def _names(self, reader: Schema, writer: Schema, where: str) -> list[str]:
        if not isinstance(reader, NamedSchema) or not isinstance(writer, NamedSchema):
            return []
        if schema_name_equals(reader, writer):
            return []
        return [
            f'{where}: {reader.type} is named "{reader.fullname}" in {self.r} '
            f'but "{writer.fullname}" in {self.w} '
            f'(keep the name, or list "{writer.fullname}" in "aliases")'
        ]

    def _record(self, reader: RecordSchema, writer: RecordSchema, path: str) -> list[str]:
        problems: list[str] = []
        for field in reader.fields:
            field_path = f"{path}.{field.name}" if path else field.name
            written = lookup_writer_field(writer_schema=writer, reader_field=field)
            if written is not None:
                problems += self.walk(field.type, written.type, field_path)
            elif not field.has_default:
                problems.append(
                    f'{_where(field_path)}: {self.r} has it without a "default" and {self.w} '
                    f"does not have it, so {self.r} cannot read data written by {self.w} "
                    '(give it a "default")'
                )
        return problems

    def _enum(self, reader: EnumSchema, writer: EnumSchema, where: str) -> list[str]:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if not missing:
            return []
        symbols = ", ".join(f'"{s}"' for s in missing)
        return [
            f'{where}: enum "{reader.fullname}" in {self.r} cannot read symbol(s) {symbols} '
            f'written by {self.w} (add them, or give the enum a "default")'
        ]

    def _union(self, reader: UnionSchema, writer: Schema, path: str) -> list[str]:
        if isinstance(writer, UnionSchema):
            return [p for branch in writer.schemas for p in self.walk(reader, branch, path)]
        if any(is_readable(branch, writer) for branch in reader.schemas):
            return []
        # Explain against the branch the writer's data was meant for, if one looks like it.
        for branch in reader.schemas:
            if _same_kind(branch, writer):
                return self.walk(branch, writer, path)
        return [
            f"{_where(path)}: the union in {self.r} has no branch that can read "
            f"{_describe(writer)} written by {self.w}"
        ]

    def _type_mismatch(self, reader: Schema, writer: Schema, where: str) -> str:
        return (
            f"{where}: {_describe(reader)} in {self.r} cannot read "
            f"{_describe(writer)} written by {self.w}"
        )

    def _checker_words(self, reader: Schema, writer: Schema, path: str) -> str:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
        kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
        messages = "; ".join(sorted(result.messages))
        locations = ", ".join(sorted(result.locations))
        return (
            f"{_where(path)}: {self.r} cannot read data written by {self.w} "
            f"({kinds}: {messages} at {locations})"
        )


def _as_schema(schema: str | Schema, label: str) -> Schema:
    if isinstance(schema, Schema):
        return schema
    return parse_schema(schema, what=label).schema


def _where(path: str) -> str:
    return f'field "{path}"' if path else "the top-level schema"


def _same_kind(a: Schema, b: Schema) -> bool:
    if a.type != b.type:
        return False
    if isinstance(a, NamedSchema) and isinstance(b, NamedSchema):
        return bool(schema_name_equals(a, b))
    return True


def _describe(schema: Schema) -> str:
    if isinstance(schema, NamedSchema):
        return f'{schema.type} "{schema.fullname}"'
    logical = schema.props.get("logicalType")
    suffix = f" ({logical})" if logical else ""
    return f'type "{schema.type}"{suffix}'
