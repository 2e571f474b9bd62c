"""Parse Avro schema text and give it one normalized form, for identity and compatibility.

Two texts that differ only in whitespace, key order or how a name is spelled
(``"name": "io.x.T"`` vs ``"name": "T", "namespace": "io.x"``) are the same
schema and must get the same global id. Unlike Avro's Parsing Canonical Form,
the normalized form keeps defaults, docs, aliases and custom properties: a new
default changes what readers do, so it is a new schema (Confluent agrees).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import avro.errors
import avro.schema
import fastavro
import fastavro.schema

from buildkit.registry.errors import InvalidSchema

AVRO = "AVRO"

# Errors a malformed schema raises from json / avro / fastavro, all meaning "invalid schema".
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    avro.errors.AvroException,
    fastavro.schema.SchemaParseException,
)


@dataclass(frozen=True)
class ParsedSchema:
    """A parsed Avro schema with its normalized JSON (see :func:`normalize`)."""

    schema: avro.schema.Schema
    normalized: str


def parse_schema(
    schema_json: str, named: Sequence[str] = (), *, what: str = "the schema"
) -> ParsedSchema:
    """Parse Avro ``schema_json``; ``named`` are referenced schemas it may use by name.

    ``named`` must be ordered so that a schema comes after those it uses (the
    order Confluent references resolve in). ``what`` names the schema in error
    messages (``"version 3"``, a file path). Raises :class:`InvalidSchema`.
    """
    names = avro.schema.Names(validate_names=True)
    fastavro_named: dict[str, Any] = {}
    try:
        for text in named:
            doc = json.loads(text)
            avro.schema.make_avsc_object(doc, names)
            fastavro.parse_schema(doc, fastavro_named)
        doc = json.loads(schema_json)
        schema = avro.schema.make_avsc_object(doc, names)
        # fastavro is what the serializers run; it also checks that field defaults
        # match their types, which avro's parser lets through.
        fastavro.parse_schema(doc, fastavro_named)
    except json.JSONDecodeError as exc:
        raise InvalidSchema(f"{what} is not a valid Avro schema: not JSON: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise InvalidSchema(f"{what} is not a valid Avro schema: {_reason(exc)}") from exc
    if not isinstance(schema, avro.schema.Schema):
        raise InvalidSchema(f"{what} is not a valid Avro schema: {schema_json[:200]!r}")
    return ParsedSchema(schema, normalize(schema))


def normalize(schema: avro.schema.Schema) -> str:
    """The schema as compact JSON with sorted keys: equal for equal schemas."""
    return json.dumps(schema.to_json(), sort_keys=True, separators=(",", ":"))


def fingerprint(normalized: str, schema_type: str = AVRO, references: Sequence[Any] = ()) -> str:
    """SHA-256 identity of a schema: its normalized text, its type and its references.

    References take part because the same text resolving its names against
    other referenced versions is a different schema.
    """
    refs = json.dumps(list(references), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{schema_type}\n{refs}\n{normalized}".encode()).hexdigest()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, fastavro.schema.UnknownType):
        text = f"unknown type {text!r} (define it first, or register it and add a reference)"
    # Keep one line: the REST error body and the CLI both print it as is.
    return " ".join(text.split())[:500]
