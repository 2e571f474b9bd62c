"""Derive the Avro schema a pydantic event model stands for.

The ``.avsc`` files in ``schemas/`` are the contracts; this mapping lets a test
(and ``buildkit schemas check``) prove that each model and its schema agree,
field by field, instead of trusting two hand-kept copies.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

TIMESTAMP_MILLIS: dict[str, str] = {"type": "long", "logicalType": "timestamp-millis"}
_PRIMITIVES: dict[Any, Any] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    bytes: "bytes",
    datetime: TIMESTAMP_MILLIS,
}


def model_avro_schema(model: type[BaseModel], namespace: str = "io.buildkit.bar") -> dict[str, Any]:
    """The Avro record schema that ``model`` maps to (named types inlined at first use)."""
    record = _record(model, namespace, set())
    assert isinstance(record, dict)
    return record


def _record(model: type[BaseModel], namespace: str, seen: set[str]) -> dict[str, Any] | str:
    name = f"{namespace}.{model.__name__}"
    if name in seen:
        return name
    seen.add(name)
    fields = []
    for fname, info in model.model_fields.items():
        avro_type = _type(info.annotation, namespace, seen)
        field: dict[str, Any] = {"name": fname, "type": avro_type}
        if info.description:
            field["doc"] = info.description
        default = _default(info)
        if default is not PydanticUndefined:
            field["default"] = default
        fields.append(field)
    record: dict[str, Any] = {"type": "record", "name": model.__name__, "namespace": namespace}
    if model.__doc__:
        record["doc"] = " ".join(model.__doc__.split())
    record["fields"] = fields
    return record


def _default(info: Any) -> Any:
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is PydanticUndefined:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _type(annotation: Any, namespace: str, seen: set[str]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], namespace, seen)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1 or len(args) != 2:
            raise TypeError(f"only Optional[X] unions map to Avro, got {annotation!r}")
        return ["null", _type(members[0], namespace, seen)]
    if origin is list:
        return {"type": "array", "items": _type(args[0], namespace, seen)}
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"Avro maps need string keys, got {annotation!r}")
        return {"type": "map", "values": _type(args[1], namespace, seen)}
    if annotation in _PRIMITIVES:
        return _PRIMITIVES[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        name = f"{namespace}.{annotation.__name__}"
        if name in seen:
            return name
        seen.add(name)
        return {
            "type": "enum",
            "name": annotation.__name__,
            "namespace": namespace,
            "symbols": [m.value for m in annotation],
        }
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _record(annotation, namespace, seen)
    raise TypeError(f"no Avro mapping for {annotation!r}")
