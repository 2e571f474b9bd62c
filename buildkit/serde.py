"""Values in the Confluent wire format: magic byte 0, 4-byte schema id, Avro binary.

Schema ids come from the schema registry once per topic (registered under the
topic's ``<topic>-value`` subject, like confluent-kafka's serializers with
``auto.register.schemas``); after that, encoding is the compiled codec alone.
Records written with another schema version are decoded by schema resolution
(fastavro, writer schema fetched by id once) into the current model.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.base import Event
from buildkit.contracts.codec import Codec
from buildkit.errors import RegistryUnavailable, SchemaNotFound, SerializationError
from buildkit.settings import Settings

MAGIC = 0
_header = struct.Struct(">bI")
T = TypeVar("T")


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A confluent-kafka registry client for ``BAR_SCHEMA_REGISTRY_*``."""
    conf = settings.registry_config()
    if conf["url"].startswith("mock://"):
        # confluent-kafka's in-memory registry, for tests that need no server.
        return SchemaRegistryClient.new_client(conf)
    conf.setdefault("timeout", max(1, int(settings.client_timeout_s)))
    conf.setdefault("max.retries", 1)
    return SchemaRegistryClient(conf)


def call_registry(settings_url: str, fn: Callable[[], T]) -> T:
    """Run a registry call; a transport failure becomes :class:`RegistryUnavailable`."""
    try:
        return fn()
    except SchemaRegistryError:
        raise
    except Exception as exc:
        raise RegistryUnavailable(
            f"cannot reach the schema registry at {settings_url}: {exc} — "
            "start it with `buildkit dev up` or set BAR_SCHEMA_REGISTRY_URL"
        ) from exc


class TopicSerde:
    """Encodes and decodes the values of one topic."""

    def __init__(self, spec: TopicSpec, schema_id: int, registry: SchemaRegistryClient, url: str):
        if spec.value_type is None:
            raise ValueError(f"topic {spec.name} carries raw bytes, not events")
        self.spec = spec
        self.model: type[Event] = spec.value_type
        self.schema_id = schema_id
        self.prefix = _header.pack(MAGIC, schema_id)
        self.codec = Codec.for_model(self.model)
        self._registry = registry
        self._url = url
        self._readers: dict[int, Callable[[memoryview], Event]] = {}

    def encode(self, value: Event) -> bytes:
        """Wire-format bytes of ``value``."""
        if type(value) is not self.model:
            raise SerializationError(
                f"topic {self.spec.name} carries {self.model.__name__}, got {type(value).__name__}"
            )
        buf = bytearray(self.prefix)
        try:
            self.codec.encode_into(value, buf)
        except (TypeError, KeyError, AttributeError, OverflowError, ValueError) as exc:
            raise SerializationError(
                f"cannot encode {self.model.__name__} for topic {self.spec.name}: {exc!r}"
            ) from exc
        return bytes(buf)

    def decode(self, data: bytes | None) -> Event:
        """The event in wire-format ``data``."""
        if data is None or len(data) < 5:
            raise SerializationError(
                f"record on {self.spec.name} is not in the Confluent wire format "
                f"({0 if data is None else len(data)} bytes)"
            )
        magic, schema_id = _header.unpack_from(data)
        if magic != MAGIC:
            raise SerializationError(
                f"record on {self.spec.name} starts with magic byte {magic}, expected 0"
            )
        if schema_id == self.schema_id:
            value: Event = self.codec.decode(data, 5)
            return value
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._readers[schema_id] = self._resolving_reader(schema_id)
        return reader(memoryview(data)[5:])

    def _resolving_reader(self, schema_id: int) -> Callable[[memoryview], Event]:
        from fastavro import parse_schema, schemaless_reader

        try:
            found = call_registry(self._url, lambda: self._registry.get_schema(schema_id))
        except SchemaRegistryError as exc:
            raise SerializationError(
                f"record on {self.spec.name} names schema id {schema_id}, "
                f"which the registry at {self._url} does not know: {exc}"
            ) from exc
        writer = parse_schema(json.loads(found.schema_str or "null"))
        reader_schema = parse_schema(self.model.avro_schema())
        model = self.model

        def read(view: memoryview) -> Event:
            record = schemaless_reader(io.BytesIO(view), writer, reader_schema)
            return model.model_validate(record)

        return read


class SerdeRegistry:
    """Per-topic serdes, schema ids fetched (and registered) once per topic."""

    def __init__(self, settings: Settings, catalog: Catalog, *, auto_register: bool = True):
        self.settings = settings
        self.catalog = catalog
        self.auto_register = auto_register
        self.client = registry_client(settings)
        self._serdes: dict[str, TopicSerde] = {}

    def for_topic(self, topic: str) -> TopicSerde:
        """The serde of ``topic`` (must be in the catalog and carry events)."""
        serde = self._serdes.get(topic)
        if serde is None:
            serde = self._serdes[topic] = self._build(topic)
        return serde

    def _build(self, topic: str) -> TopicSerde:
        spec = self.catalog.get(topic)
        if spec.value_type is None:
            raise SchemaNotFound(f"topic {topic} carries raw bytes; it has no value schema")
        url = self.settings.schema_registry_url
        schema = Schema(spec.value_type.avro_schema_str(), "AVRO")
        try:
            if self.auto_register:
                schema_id = call_registry(
                    url, lambda: self.client.register_schema(spec.value_subject, schema)
                )
            else:
                registered = call_registry(
                    url, lambda: self.client.lookup_schema(spec.value_subject, schema)
                )
                schema_id = registered.schema_id or 0
        except SchemaRegistryError as exc:
            raise SchemaNotFound(
                f"schema registry at {url} refused {spec.value_type.__name__} under subject "
                f"{spec.value_subject}: {exc.error_message} (HTTP {exc.http_status_code})"
            ) from exc
        return TopicSerde(spec, int(schema_id), self.client, url)


def decode_key(key: bytes | None) -> str | None:
    """The string key of a record (undecodable bytes are replaced, never fatal)."""
    return None if key is None else key.decode(errors="replace")


def peek_schema_id(data: bytes | None) -> int | None:
    """The schema id of wire-format bytes, or None if they are not in that format."""
    if data is None or len(data) < 5 or data[0] != MAGIC:
        return None
    return int(_header.unpack_from(data)[1])


def describe_value(data: Any) -> str:
    """A short human description of a raw value, for error messages."""
    if data is None:
        return "null"
    return f"{len(data)} bytes"
