"""Schemas of an OpenAPI document: self-contained JSON Schemas and synthesized values.

Two jobs, both deterministic (no randomness, document order kept):

- :meth:`SchemaTools.bundle` turns a (3.0 or 3.1) schema into one
  self-contained JSON Schema draft 2020-12 document, so generated tests can
  validate responses without the spec file: every ``$ref`` (also into other
  files, also recursive) becomes ``#/$defs/<name>``, and the 3.0 dialect is
  converted — ``nullable: true`` adds ``"null"`` to the type (or wraps the
  schema in ``anyOf`` with ``{"type": "null"}``), boolean
  ``exclusiveMinimum``/``exclusiveMaximum`` become the numeric 2020-12 form,
  ``$ref`` siblings are dropped as 3.0 says, and annotation-only keywords
  (``example``, ``xml``, ``discriminator``, ``externalDocs``) are left out.
  For responses, ``writeOnly`` properties are not required; for requests,
  ``readOnly`` ones.
- :meth:`SchemaTools.example` synthesizes a valid value: ``const``, then the
  schema's ``example``/``examples``, then the first non-null ``enum`` value,
  then ``default``, then a value by type and format within
  ``minimum``/``maximum``/``minLength``/``maxLength``/``minItems``; ``allOf``
  branches are merged, the first non-null ``oneOf``/``anyOf`` branch is taken.

Why not a library: the JSON-Schema fakers available (hypothesis-jsonschema and
the like) draw random values and do not know OpenAPI's ``readOnly`` request
rules or the 3.0 dialect; generated tests must be byte-identical for the same
spec, so the values are chosen by fixed rules here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urldefrag, urljoin

from jsonschema import Draft202012Validator

from qits.openapi import Spec

Mode = Literal["request", "response"]

_ANNOTATIONS_DROPPED = {"example", "examples", "xml", "discriminator", "externalDocs"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_DATA_KEYWORDS = {"enum", "const", "default", "required"}
_MAX_DEPTH = 6

_FORMAT_VALUES: dict[str, Any] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000001",
    "uri": "https://example.com/resource",
    "url": "https://example.com/resource",
    "uri-reference": "https://example.com/resource",
    "iri": "https://example.com/resource",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "byte": "ZXhhbXBsZQ==",
    "binary": "example",
    "password": "S3cret-passw0rd",
    "json-pointer": "/example",
    "regex": "^example$",
}


class Cycle(Exception):
    """A required value would need a recursive schema to be expanded forever."""


def join(base: str, ref: str) -> str:
    """The absolute URI of ``ref`` relative to ``base`` (works for ``urn:`` bases too)."""
    return urldefrag(base).url + ref if ref.startswith("#") else urljoin(base, ref)


def schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The declared ``type`` as a list (3.1 lists, 3.0 strings; none when undeclared)."""
    declared = schema.get("type")
    if isinstance(declared, list):
        return [str(t) for t in declared]
    return [str(declared)] if isinstance(declared, str) else []


class SchemaTools:
    """Bundling and value synthesis for the schemas of one :class:`Spec`."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.notes: list[str] = []
        """What synthesis could not honour (a ``pattern``…); the caller reads and clears it."""

    # -- bundling -----------------------------------------------------------------

    def bundle(self, schema: Any, base: str, mode: Mode | None) -> dict[str, Any]:
        """A self-contained draft 2020-12 schema for ``schema`` (see module docstring).

        ``mode`` ``None`` keeps ``required`` as written (no readOnly/writeOnly relaxing).
        """
        defs: dict[str, Any] = {}
        names: dict[str, str] = {}

        def define(ref: str, node_base: str) -> str:
            canonical = join(node_base, ref)
            if canonical not in names:
                target, target_base = self.spec.lookup(ref, node_base)
                stem = urldefrag(canonical).fragment.rsplit("/", 1)[-1] or "root"
                stem = stem.replace("~", "_")
                name, n = stem, 1
                while name in defs:
                    n += 1
                    name = f"{stem}_{n}"
                names[canonical] = name
                defs[name] = {}  # placeholder so a recursive ref finds its name
                defs[name] = walk(target, target_base)
            return names[canonical]

        def walk(node: Any, node_base: str) -> Any:
            if isinstance(node, list):
                return [walk(item, node_base) for item in node]
            if isinstance(node, bool) or not isinstance(node, Mapping):
                return node
            ref = node.get("$ref")
            if isinstance(ref, str) and self.spec.version == "3.0":
                return {"$ref": f"#/$defs/{define(ref, node_base)}"}
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    out[key] = f"#/$defs/{define(value, node_base)}"
                elif key in _ANNOTATIONS_DROPPED:
                    continue
                elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
                    out[key] = {name: walk(sub, node_base) for name, sub in value.items()}
                elif key in _DATA_KEYWORDS:
                    out[key] = copy.deepcopy(value)
                else:
                    out[key] = walk(value, node_base)
            self._relax_required(node, out, mode)
            return _from_30(out) if self.spec.version == "3.0" else out

        root = walk(schema, base)
        if not defs:
            return root if isinstance(root, dict) else {}
        if not isinstance(root, dict):
            root = {}
        return {**root, "$defs": {**root.get("$defs", {}), **defs}}

    def _relax_required(
        self, node: Mapping[str, Any], out: dict[str, Any], mode: Mode | None
    ) -> None:
        """Drop from ``required`` what the other direction never carries."""
        props = node.get("properties")
        if mode is None:
            return
        if not isinstance(props, Mapping) or not isinstance(out.get("required"), list):
            return
        hidden = "writeOnly" if mode == "response" else "readOnly"
        skip = {k for k, v in props.items() if isinstance(v, Mapping) and v.get(hidden) is True}
        if skip:
            out["required"] = [r for r in out["required"] if r not in skip]

    def validates(self, schema: Any, base: str, value: Any) -> bool:
        """True when ``value`` is valid for ``schema`` (bundled, ``required`` as written)."""
        try:
            bundled = self.bundle(schema, base, None)
            return not any(True for _ in Draft202012Validator(bundled).iter_errors(value))
        except Exception:  # a schema jsonschema cannot evaluate: do not trust the value
            return False

    # -- shapes -------------------------------------------------------------------

    def resolve(
        self, schema: Any, base: str, stack: tuple[str, ...] = ()
    ) -> tuple[Any, str, tuple[str, ...]]:
        """Follow ``$ref``s; raise :class:`Cycle` when one is already being expanded."""
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str):
            canonical = join(base, schema["$ref"])
            if canonical in stack:
                raise Cycle(canonical)
            stack = (*stack, canonical)
            schema, base = self.spec.lookup(schema["$ref"], base)
        return schema, base, stack

    def flatten(
        self, schema: Any, base: str, stack: tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]], list[str], tuple[str, ...]]:
        """Merge ``allOf``: (keywords, properties with their bases, required, ref stack)."""
        schema, base, stack = self.resolve(schema, base, stack)
        if not isinstance(schema, Mapping):
            return {}, {}, [], stack
        keywords: dict[str, Any] = {}
        props: dict[str, tuple[Any, str]] = {}
        required: list[str] = []
        for branch in schema.get("allOf") or []:
            sub_kw, sub_props, sub_req, _ = self.flatten(branch, base, stack)
            for key, value in sub_kw.items():
                keywords.setdefault(key, value)
            props.update(sub_props)
            required += [r for r in sub_req if r not in required]
        for key, value in schema.items():
            if key not in ("allOf", "properties", "required"):
                keywords[key] = value
        for name, sub in (schema.get("properties") or {}).items():
            props[name] = (sub, base)
        required += [r for r in schema.get("required") or [] if r not in required]
        keywords["__base__"] = base
        return keywords, props, required, stack

    def request_fields(self, schema: Any, base: str) -> tuple[list[str], bool]:
        """Required, writable top-level fields of a request body, and whether it is an object."""
        try:
            keywords, props, required, _ = self.flatten(schema, base)
        except Cycle:
            return [], False
        is_object = "object" in schema_types(keywords) or bool(props)
        writable = []
        for name in required:
            sub = props.get(name)
            if sub is not None:
                try:
                    resolved, _, _ = self.resolve(*sub)
                except Cycle:
                    resolved = {}
                if isinstance(resolved, Mapping) and resolved.get("readOnly") is True:
                    continue
            writable.append(name)
        return writable, is_object

    # -- synthesis ----------------------------------------------------------------

    def example(self, schema: Any, base: str, mode: Mode, key: str | None = None) -> Any:
        """A deterministic value valid against ``schema`` (see module docstring)."""
        try:
            return self._value(schema, base, mode, key, 0, ())
        except Cycle:
            return {}

    def _value(
        self,
        schema: Any,
        base: str,
        mode: Mode,
        key: str | None,
        depth: int,
        stack: tuple[str, ...],
    ) -> Any:
        if schema is True or schema is None:
            return "example"
        kw, props, required, stack = self.flatten(schema, base, stack)
        base = kw.pop("__base__", base)
        if "const" in kw:
            return copy.deepcopy(kw["const"])
        if "example" in kw and self.spec.version == "3.0":
            return copy.deepcopy(kw["example"])
        if isinstance(kw.get("examples"), list) and kw["examples"]:
            return copy.deepcopy(kw["examples"][0])
        if "example" in kw:
            return copy.deepcopy(kw["example"])
        enum = [v for v in kw.get("enum") or [] if v is not None]
        if enum:
            return copy.deepcopy(enum[0])
        if kw.get("default") is not None:
            return copy.deepcopy(kw["default"])
        for combinator in ("oneOf", "anyOf"):
            branches = kw.get(combinator)
            if isinstance(branches, list) and branches:
                chosen = self._value(
                    self._first_non_null(branches, base, stack), base, mode, key, depth, stack
                )
                if props and isinstance(chosen, dict):
                    own = self._object(props, required, base, mode, depth, stack, kw)
                    return {**own, **chosen}
                return chosen
        types = [t for t in schema_types(kw) if t != "null"]
        kind = types[0] if types else _infer(kw, props)
        if kind == "object":
            return self._object(props, required, base, mode, depth, stack, kw)
        if kind == "array":
            return self._array(kw, base, mode, key, depth, stack)
        if kind == "integer":
            return int(_number(kw, 1))
        if kind == "number":
            return _number(kw, 1.5)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        if kind == "any":
            return "example"
        return self._string(kw, key)

    def _first_non_null(self, branches: list[Any], base: str, stack: tuple[str, ...]) -> Any:
        for branch in branches:
            try:
                resolved, _, _ = self.resolve(branch, base, stack)
            except Cycle:
                continue
            if not (isinstance(resolved, Mapping) and schema_types(resolved) == ["null"]):
                return branch
        return branches[0]

    def _object(
        self,
        props: dict[str, tuple[Any, str]],
        required: list[str],
        base: str,
        mode: Mode,
        depth: int,
        stack: tuple[str, ...],
        kw: Mapping[str, Any],
    ) -> dict[str, Any]:
        hidden = "readOnly" if mode == "request" else "writeOnly"
        result: dict[str, Any] = {}
        for name, (sub, sub_base) in props.items():
            needed = name in required
            if not needed and depth >= _MAX_DEPTH:
                continue
            try:
                resolved, _, _ = self.resolve(sub, sub_base, stack)
                if isinstance(resolved, Mapping) and resolved.get(hidden) is True:
                    continue
                result[name] = self._value(sub, sub_base, mode, name, depth + 1, stack)
            except Cycle:
                if needed:
                    raise
        min_props = kw.get("minProperties")
        if not props and isinstance(min_props, int) and min_props > 0:
            extra = kw.get("additionalProperties")
            for i in range(min_props):
                value = (
                    self._value(extra, base, mode, None, depth + 1, stack)
                    if isinstance(extra, Mapping)
                    else "example"
                )
                result[f"key{i + 1}"] = value
        return result

    def _array(
        self,
        kw: Mapping[str, Any],
        base: str,
        mode: Mode,
        key: str | None,
        depth: int,
        stack: tuple[str, ...],
    ) -> list[Any]:
        prefix = kw.get("prefixItems")
        values = (
            [self._value(p, base, mode, key, depth + 1, stack) for p in prefix]
            if isinstance(prefix, list)
            else []
        )
        count = max(1, int(kw.get("minItems") or 0)) - len(values)
        if kw.get("maxItems") == 0 or depth >= _MAX_DEPTH:
            count = max(0, int(kw.get("minItems") or 0)) - len(values)
        items = kw.get("items")
        if isinstance(items, Mapping) and count > 0:
            try:
                item = self._value(items, base, mode, key, depth + 1, stack)
            except Cycle:
                if int(kw.get("minItems") or 0) > 0:
                    raise
                return values
            values += [copy.deepcopy(item) for _ in range(count)]
        return values

    def _string(self, kw: Mapping[str, Any], key: str | None) -> str:
        fmt = str(kw.get("format") or "")
        lowered = (key or "").lower()
        if fmt in _FORMAT_VALUES:
            value = str(_FORMAT_VALUES[fmt])
        elif lowered.endswith("email"):
            value = "user@example.com"
        elif lowered.endswith("url") or lowered.endswith("uri"):
            value = "https://example.com/resource"
        else:
            value = f"example-{key}" if key else "example"
        if "pattern" in kw:
            self.notes.append(f'pattern {kw["pattern"]!r} not synthesized (value "{value}")')
        min_len, max_len = kw.get("minLength"), kw.get("maxLength")
        if isinstance(min_len, int) and len(value) < min_len:
            value = value + "x" * (min_len - len(value))
        if isinstance(max_len, int) and len(value) > max_len:
            value = value[:max_len]
        return value


def _infer(kw: Mapping[str, Any], props: Mapping[str, Any]) -> str:
    if props or "additionalProperties" in kw or "minProperties" in kw:
        return "object"
    if "items" in kw or "prefixItems" in kw:
        return "array"
    if any(k in kw for k in ("minimum", "maximum", "multipleOf")):
        return "number"
    if any(k in kw for k in ("format", "pattern", "minLength", "maxLength")):
        return "string"
    return "any"


def _number(kw: Mapping[str, Any], preferred: float) -> float:
    """``preferred`` moved inside the schema's bounds (numeric or 3.0 boolean exclusive)."""
    value = preferred
    low, high = kw.get("minimum"), kw.get("maximum")
    ex_low, ex_high = kw.get("exclusiveMinimum"), kw.get("exclusiveMaximum")
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low, ex_low = ex_low, True
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high, ex_high = ex_high, True
    if isinstance(low, int | float) and (value < low or (ex_low is True and value <= low)):
        value = low + 1 if ex_low is True else low
    if isinstance(high, int | float) and (value > high or (ex_high is True and value >= high)):
        value = high - 1 if ex_high is True else high
    return value


def _from_30(schema: dict[str, Any]) -> dict[str, Any]:
    """One 3.0 schema object in the 2020-12 dialect (children are converted already)."""
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        flag = schema.get(exclusive)
        if isinstance(flag, bool):
            del schema[exclusive]
            if flag and bound in schema:
                schema[exclusive] = schema.pop(bound)
    if schema.pop("nullable", False) is True:
        declared = schema.get("type")
        if isinstance(declared, str):
            schema["type"] = [declared, "null"]
            if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
                schema["enum"] = [*schema["enum"], None]
        else:
            return {"anyOf": [schema, {"type": "null"}]}
    return schema
