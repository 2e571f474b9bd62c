"""Raw records and their JSON form, shared by consume, replay and the audit archive.

A :class:`RawRecord` is a record as stored (bytes in, bytes out), so replay and
archive copy exactly what was produced. :class:`GenericDecoder` turns any
wire-format value into JSON-ready data using the writer's schema from the
registry (fetched once per schema id), so topics outside the catalog work too.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from buildkit.contracts.codec import Codec
from buildkit.errors import SerializationError
from buildkit.serde import call_registry, peek_schema_id

HeaderList = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record exactly as the log holds it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)

    @classmethod
    def from_message(cls, msg: Message) -> RawRecord:
        """The raw record of a consumed librdkafka message."""
        return cls(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.timestamp()[1],
            msg.key(),
            msg.value(),
            list(msg.headers() or []),  # type: ignore[arg-type]
        )

    @property
    def key_text(self) -> str | None:
        """The key as text."""
        return None if self.key is None else self.key.decode(errors="replace")

    def header_dict(self) -> dict[str, str]:
        """Headers as text (last value wins)."""
        return {k: ("" if v is None else v.decode(errors="replace")) for k, v in self.headers}


class GenericDecoder:
    """Decodes any Confluent wire-format value into plain data, by its schema id."""

    def __init__(self, registry: SchemaRegistryClient, registry_url: str) -> None:
        self._registry = registry
        self._url = registry_url
        self._codecs: dict[int, Codec] = {}

    def decode_or_raw(self, data: bytes | None) -> Any:
        """Like :meth:`decode`, but a value that is not in the wire format at all (a
        dead-letter topic's, or a foreign producer's) comes back as
        ``{"_raw_base64": ...}`` so it can still be shown, copied and replayed."""
        if data is not None and peek_schema_id(data) is None:
            return {"_raw_base64": base64.b64encode(data).decode()}
        return self.decode(data)

    def decode(self, data: bytes | None) -> Any:
        """Plain data (dicts, lists, scalars) of a wire-format value."""
        if data is None:
            return None
        schema_id = peek_schema_id(data)
        if schema_id is None:
            raise SerializationError(
                f"value is not in the Confluent wire format ({len(data)} bytes)"
            )
        codec = self._codecs.get(schema_id)
        if codec is None:
            try:
                schema = call_registry(self._url, lambda: self._registry.get_schema(schema_id))
            except SchemaRegistryError as exc:
                raise SerializationError(
                    f"schema id {schema_id} is unknown to the registry at {self._url}: {exc}"
                ) from exc
            codec = self._codecs[schema_id] = Codec(json.loads(schema.schema_str or "null"), None)
        try:
            return codec.decode(memoryview(data)[5:])
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"value with schema id {schema_id} is malformed: {exc!r}"
            ) from exc


def to_jsonable(value: Any) -> Any:
    """Plain data with datetimes as ISO-8601 and bytes as base64."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # enums
        return value.value
    return value


def record_json(record: RawRecord, value: Any) -> dict[str, Any]:
    """The JSON Lines form of a record (``buildkit consume`` / ``replay --out``)."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "key": record.key_text,
        "headers": record.header_dict(),
        "value": to_jsonable(value),
    }


def field_value(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` in decoded data (``error.code``), or None."""
    current = value
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def matches(value: Any, filters: list[tuple[str, str]]) -> bool:
    """True when every ``field=value`` filter holds (compared as text)."""
    for path, expected in filters:
        found = field_value(value, path)
        if found is None:
            if expected not in ("", "null", "None"):
                return False
            continue
        found = to_jsonable(found)
        if isinstance(found, list):
            if expected not in [str(v) for v in found]:
                return False
        elif isinstance(found, bool):
            if str(found).lower() != expected.lower():
                return False
        elif str(found) != expected:
            return False
    return True
