"""The base every event model derives from, and the registry of event types."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

NAMESPACE = "io.buildkit.bar"


class Event(BaseModel):
    """An event contract: a pydantic model whose Avro schema lives in ``schemas/``.

    Subclasses set ``schema_file`` (the ``.avsc`` file name) and are registered
    with :func:`register` so that serializers, the catalog and the checks can
    find them by Avro full name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    schema_file: ClassVar[str]

    @classmethod
    def avro_name(cls) -> str:
        """The Avro full name of this event's record."""
        return f"{NAMESPACE}.{cls.__name__}"

    @classmethod
    def avro_schema(cls) -> dict[str, Any]:
        """The parsed JSON of this event's ``.avsc`` contract."""
        return load_schema(cls.schema_file)

    @classmethod
    def avro_schema_str(cls) -> str:
        """The contract as the canonical JSON string registered with the registry."""
        return json.dumps(cls.avro_schema(), separators=(",", ":"))


_EVENT_TYPES: dict[str, type[Event]] = {}


def register(model: type[Event]) -> type[Event]:
    """Register an event type (usable as a class decorator)."""
    _EVENT_TYPES[model.avro_name()] = model
    return model


def event_types() -> dict[str, type[Event]]:
    """Every registered event type by Avro full name."""
    return dict(_EVENT_TYPES)


@cache
def load_schema(file_name: str) -> dict[str, Any]:
    """Read ``schemas/<file_name>`` (installed as package data of ``schemas``)."""
    text = resources.files("schemas").joinpath(file_name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
