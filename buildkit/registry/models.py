"""Request and response bodies of the Confluent Schema Registry REST API (pydantic v2).

Field names are Confluent's (camelCase where Confluent uses it, via aliases).
Responses are sent with ``None`` fields left out, as Confluent leaves out
``schemaType`` for Avro and ``references`` when there are none.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # Unknown properties (metadata, ruleSet, id, …) are accepted and ignored, like
    # Confluent with "Confluent-Accept-Unknown-Properties: true".
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SchemaReference(_Body):
    """A named type this schema uses, defined by a version of another subject."""

    name: str
    subject: str
    version: int = Field(description="The referenced version; -1 means the latest")


class SchemaRequest(_Body):
    """Body of register, lookup and compatibility-test requests."""

    schema_text: str = Field(alias="schema")
    schema_type: str = Field(default="AVRO", alias="schemaType")
    references: list[SchemaReference] = Field(default_factory=list)


class RegisteredId(_Body):
    """Answer to a registration: the global id, plus the subject version it landed in."""

    id: int
    subject: str | None = None
    version: int | None = None
    schema_text: str | None = Field(default=None, alias="schema")
    schema_type: str | None = Field(default=None, alias="schemaType")
    references: list[SchemaReference] | None = None


class SchemaBody(_Body):
    """A schema fetched by id."""

    schema_text: str = Field(alias="schema")
    schema_type: str | None = Field(default=None, alias="schemaType")
    references: list[SchemaReference] | None = None


class SubjectVersionBody(_Body):
    """A subject version with its schema."""

    subject: str
    version: int
    id: int
    schema_text: str = Field(alias="schema")
    schema_type: str | None = Field(default=None, alias="schemaType")
    references: list[SchemaReference] | None = None
    deleted: bool | None = None


class SubjectVersionPair(_Body):
    """A ``(subject, version)`` a schema id is registered under."""

    subject: str
    version: int


class CompatibilityResult(_Body):
    """Answer to a compatibility test; ``messages`` only when ``verbose=true``."""

    is_compatible: bool
    messages: list[str] | None = None


class ConfigUpdate(_Body):
    """Body of ``PUT /config`` and ``PUT /config/{subject}``."""

    compatibility: str | None = None


class ConfigUpdated(_Body):
    """Answer to a config update."""

    compatibility: str


class ConfigBody(_Body):
    """Answer to ``GET /config``: the level in force."""

    compatibility_level: str = Field(alias="compatibilityLevel")


class ErrorBody(_Body):
    """Confluent's error shape, for every non-2xx answer."""

    error_code: int
    message: str


def references_out(refs: list[dict[str, Any]]) -> list[SchemaReference] | None:
    """Stored references as response items (``None`` when there are none)."""
    return [SchemaReference.model_validate(r) for r in refs] or None
