"""What the api-builder needs from an OpenAPI document beyond :mod:`qits.openapi`:
merged raw parameters, JSON media types, and the example values its replies carry.

Loading, ``$ref`` resolution and the 3.0 → JSON Schema 2020-12 conversion are
:mod:`qits.openapi` and :mod:`qits.openapi_schema`. The built app answers with
bodies computed here at build time (stub responses, 404/401/422 error bodies,
the template every stored object starts from), so they are deterministic and
checked against their schema with ``jsonschema`` before use. Unlike the test
inputs of :meth:`~qits.openapi_schema.SchemaTools.example`, these are *minimal*
values (``0``, ``false``, ``[]``, the schema's own defaults) and error-shaped
fields are filled from the status (``{"code": 404, "message": ...}``): the
generated tests and the builder's tests pin both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qits.openapi import Spec, load_spec
from qits.openapi_schema import SchemaTools, schema_types

_MESSAGE_NAMES = {"message", "detail", "title", "error", "description", "reason", "msg"}
_STATUS_NAMES = {"code", "status", "statuscode", "status_code", "httpstatus"}
_STRING_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "/",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "byte": "",
    "password": "secret",
}


class BuildSpec(Spec):
    """A loaded document with what the builder asks of it (see the module docstring)."""

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any]) -> BuildSpec:
        """Load like :func:`qits.openapi.load_spec` (a path, JSON/YAML text, or a dict)."""
        loaded = load_spec(source)
        return cls(loaded.document, loaded.base_uri)

    def __init__(self, document: Mapping[str, Any], base_uri: str) -> None:
        super().__init__(document, base_uri)
        self.declared = str(document.get("openapi"))
        """The ``openapi`` version as written (``3.0.3``); :attr:`version` is ``3.0``/``3.1``."""
        self._tools = SchemaTools(self)

    def raw_parameters(self, path_item: Any, operation: Any) -> list[dict[str, Any]]:
        """Path-level then operation-level parameters, the operation's overriding by (name, in)."""
        merged, _ = self.parameters(as_dict(path_item), as_dict(operation), self.base_uri, "")
        return [dict(param) for param, _ in merged]

    def schema_validates(self, schema: Any, value: Any) -> bool:
        """True when ``value`` is valid for ``schema`` (refs resolved against this spec)."""
        return self._tools.validates(schema, self.base_uri, value)

    def synthesize(self, schema: Any, status: int | None = None, message: str = "") -> Any:
        """A value valid for ``schema``: examples when they validate, else a minimal value.

        ``status`` and ``message`` fill error-shaped fields (``code``/``status`` integers,
        ``message``/``detail``/``title`` strings) so a 404 reads ``{"code": 404, ...}``.
        """
        return _Synth(self, status, message).value(schema, "", 0)

    def same_schema(self, a: Any, b: Any) -> bool:
        """True when two schemas are one (same ``$ref``) or resolve to equal dicts."""
        if (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.get("$ref")
            and a.get("$ref") == b.get("$ref")
        ):
            return True
        return bool(self.resolve(a) == self.resolve(b) and self.resolve(a))


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty dict (spec nodes may be anything)."""
    return value if isinstance(value, dict) else {}


def json_media(content: Any) -> tuple[str, dict[str, Any]] | None:
    """The JSON entry of a ``content`` map: ``application/json`` first, then any ``*json``."""
    if not isinstance(content, dict):
        return None
    ranked = sorted(
        (ct for ct in content if "json" in ct.lower()),
        key=lambda ct: (ct.split(";")[0].strip().lower() != "application/json", ct),
    )
    if not ranked:
        return None
    media = content[ranked[0]]
    return ranked[0], media if isinstance(media, dict) else {}


class _Synth:
    """One synthesis pass; ``depth`` stops recursive schemas."""

    def __init__(self, spec: BuildSpec, status: int | None, message: str) -> None:
        self.spec = spec
        self.status = status
        self.message = message

    def value(self, schema: Any, name: str, depth: int) -> Any:
        raw = schema
        schema = self.spec.resolve(schema)
        if not isinstance(schema, dict) or depth > 12:
            return None
        hinted = self._hint(schema, name)
        if hinted is not None:
            return hinted
        for candidate in self._given(schema):
            if self.spec.schema_validates(raw, candidate):
                return candidate
        built = self._build(schema, name, depth)
        return built

    def _given(self, schema: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        if "const" in schema:
            out.append(schema["const"])
        if "default" in schema:
            out.append(schema["default"])
        if isinstance(schema.get("enum"), list):
            out.extend(v for v in schema["enum"] if v is not None)
        if "example" in schema:
            out.append(schema["example"])
        if isinstance(schema.get("examples"), list):
            out.extend(schema["examples"])
        return out

    def _hint(self, schema: dict[str, Any], name: str) -> Any:
        kinds = _types(schema)
        lowered = name.lower()
        if self.status is not None and lowered in _STATUS_NAMES and "integer" in kinds:
            return self.status
        free_text = not any(k in schema for k in ("enum", "pattern", "format", "const"))
        if self.message and lowered in _MESSAGE_NAMES and kinds == ["string"] and free_text:
            return self.message
        return None

    def _build(self, schema: dict[str, Any], name: str, depth: int) -> Any:
        flat = self._flatten(schema, depth)
        if flat is not None:
            return self._object(flat, depth)
        if "allOf" in schema:
            merged: Any = None
            for part in schema["allOf"]:
                piece = self.value(part, name, depth + 1)
                merged = (
                    {**merged, **piece}
                    if isinstance(merged, dict) and isinstance(piece, dict)
                    else (piece if merged is None else merged)
                )
            own = {k: v for k, v in schema.items() if k != "allOf"}
            if own.get("properties") or own.get("required"):
                extra = self._build(own, name, depth)
                if isinstance(extra, dict):
                    merged = {**(merged or {}), **extra}
            return merged
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self._choice(schema, key, name, depth)
        kinds = _types(schema)
        kind = kinds[0] if kinds else ("object" if "properties" in schema else None)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            count = int(schema.get("minItems", 0))
            return [self.value(schema.get("items", {}), name, depth + 1) for _ in range(count)]
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return _number(schema, kind)
        if kind == "boolean":
            return False
        return None

    def _flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any] | None:
        """An allOf of object schemas as one object schema (properties and required merged)."""
        if "allOf" not in schema or depth > 12:
            return None
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in [*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}]:
            part = self.spec.resolve(part)
            if not isinstance(part, dict):
                return None
            if "allOf" in part:
                part = self._flatten(part, depth + 1)
                if part is None:
                    return None
            if any(k in part for k in ("oneOf", "anyOf")) or _types(part) not in ([], ["object"]):
                return None
            props.update(part.get("properties") or {})
            required += [r for r in part.get("required", []) if r not in required]
        return {"type": "object", "properties": props, "required": required}

    def _choice(self, schema: dict[str, Any], key: str, name: str, depth: int) -> Any:
        branches = schema[key]
        disc = as_dict(schema.get("discriminator"))
        fallback: Any = None
        for index, branch in enumerate(branches):
            value = self.value(branch, name, depth + 1)
            if isinstance(value, dict) and disc.get("propertyName"):
                tag = _discriminator_value(disc, branch)
                if tag is not None:
                    value = {**value, disc["propertyName"]: tag}
            if index == 0:
                fallback = value
            if self.spec.schema_validates(schema, value):
                return value
        return fallback

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = as_dict(schema.get("properties"))
        out: dict[str, Any] = {}
        for prop in schema.get("required", []):
            out[prop] = self.value(props.get(prop, {}), prop, depth + 1)
        for prop, sub in props.items():
            resolved = self.spec.resolve(sub)
            if prop not in out and isinstance(resolved, dict) and "default" in resolved:
                out[prop] = resolved["default"]
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        text = _STRING_FORMATS.get(str(schema.get("format", "")), "string")
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text.ljust(int(schema.get("minLength", 0)), "x")


def _types(schema: dict[str, Any]) -> list[str]:
    return [k for k in schema_types(schema) if k != "null"]


def _number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        low, step = exclusive, 1
    else:
        step = 1 if exclusive is True else 0
    value = (low + step) if low is not None else 0
    high = schema.get("maximum")
    if high is not None and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if multiple and value % multiple:
        value = (value // multiple + 1) * multiple
    return int(value) if kind == "integer" else float(value)


def _discriminator_value(disc: dict[str, Any], branch: Any) -> str | None:
    ref = branch.get("$ref") if isinstance(branch, dict) else None
    if not ref:
        return None
    for tag, target in (disc.get("mapping") or {}).items():
        if target == ref or target == ref.rsplit("/", 1)[-1]:
            return str(tag)
    return str(ref.rsplit("/", 1)[-1])
