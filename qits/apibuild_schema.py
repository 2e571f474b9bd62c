"""Reading an OpenAPI document for the api-builder: ``$ref`` resolution, merged
parameters, JSON media types, and example values synthesized from schemas.

The built app answers with bodies computed here at build time (stub responses,
404/401/422 error bodies, the template every stored object starts from), so they
are deterministic and checked against their schema with ``jsonschema`` before use.
Works for OpenAPI 3.0 (``nullable``, boolean ``exclusiveMinimum``) and 3.1
(``type`` lists, ``const``, ``examples``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from qits.testgen_errors import SpecError

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

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


def load_spec(spec: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The spec as a dict: from a mapping, a YAML/JSON file path, or YAML/JSON text."""
    if isinstance(spec, Mapping):
        data: Any = copy.deepcopy(dict(spec))
    else:
        text = str(spec)
        path = Path(text)
        if isinstance(spec, Path) or ("\n" not in text and len(text) < 4096 and path.exists()):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise SpecError(f'cannot read spec "{spec}": {exc} — pass an OpenAPI file') from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"spec is neither YAML nor JSON: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("openapi", "")).startswith("3."):
        found = data.get("openapi") or data.get("swagger") if isinstance(data, dict) else None
        raise SpecError(
            f"not an OpenAPI 3.x document (openapi: {found!r}) — convert Swagger 2.0 first"
        )
    # Round-trip through JSON: YAML dates and integer keys become the strings the spec means.
    loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return loaded


class Spec:
    """An OpenAPI document with ``$ref`` resolution and schema synthesis."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.version = str(data.get("openapi", "3.0.0"))

    def resolve(self, node: Any, _seen: frozenset[str] = frozenset()) -> Any:
        """Follow a local ``$ref`` chain (``#/...``); other nodes come back unchanged."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in _seen:
                return {}
            _seen = _seen | {ref}
            target: Any = self.data
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    return {}
                target = target[part]
            node = target
        return node

    def parameters(self, path_item: dict[str, Any], operation: dict[str, Any]) -> list[dict]:
        """Path-level then operation-level parameters, the operation's overriding by (name, in)."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
            param = self.resolve(raw)
            if isinstance(param, dict) and "name" in param and "in" in param:
                merged[(str(param["name"]), str(param["in"]))] = param
        return list(merged.values())

    def schema_validates(self, schema: Any, value: Any) -> bool:
        """True when ``value`` is valid for ``schema`` (refs resolved against this spec)."""
        root = {**_to_json_schema(schema), "components": self.data.get("components", {})}
        try:
            return not any(True for _ in Draft202012Validator(root).iter_errors(value))
        except Exception:  # a schema jsonschema cannot evaluate: do not trust the value
            return False

    def synthesize(self, schema: Any, status: int | None = None, message: str = "") -> Any:
        """A value valid for ``schema``: examples when they validate, else a minimal value.

        ``status`` and ``message`` fill error-shaped fields (``code``/``status`` integers,
        ``message``/``detail``/``title`` strings) so a 404 reads ``{"code": 404, ...}``.
        """
        value = _Synth(self, status, message).value(schema, "", 0)
        return value

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


def _to_json_schema(schema: Any) -> dict[str, Any]:
    """OpenAPI 3.0 schema keywords rewritten for JSON Schema 2020-12 (recursively)."""
    if not isinstance(schema, dict):
        return {} if schema is None or schema is True else {"not": {}}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(
            value, dict
        ):
            out[key] = {k: _to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "contains") and isinstance(
            value, dict
        ):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf", "prefixItems") and isinstance(value, list):
            out[key] = [_to_json_schema(v) for v in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in schema:
                out[key] = schema[bound]
        elif key in ("minimum", "maximum") and schema.get(f"exclusive{key.title()}") is True:
            continue  # rewritten as exclusiveMinimum/exclusiveMaximum above
        elif key in ("discriminator", "xml", "example", "externalDocs", "nullable"):
            continue
        else:
            out[key] = value
    if schema.get("nullable") is True and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


class _Synth:
    """One synthesis pass; ``depth`` stops recursive schemas."""

    def __init__(self, spec: Spec, status: int | None, message: str) -> None:
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
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else ([kind] if kind else [])
    return [k for k in kinds if k != "null"]


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
