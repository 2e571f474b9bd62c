"""The api-builder's plan: which operations are CRUD over a stored resource, which are stubs,
and everything each route needs (typed parameters, request model, documented replies).

CRUD detection, on path shapes and methods only:

- An **item path** ends in one path parameter (``/pets/{petId}``); its **collection
  path** is the same path without that segment (``/pets``).
- A collection is a **resource** when it has a POST with a JSON body (the create):
  without one nothing could be stored, so reads would always be 404 (this matches
  the generated tests, which create an item first exactly when that POST exists).
- On a resource: GET collection answering an array (or an object holding one array,
  an *envelope*) is **list**; POST collection with a JSON body is **create**; GET /
  PUT / PATCH / DELETE item are **read** / **replace** / **update** / **delete**.
- Parameters before the last segment (``/users/{uid}/posts``) are parent keys: items
  are stored per parent, and an operation under a stored item that documents 404
  answers 404 when that item does not exist.
- Everything else is a **stub**: the first documented success code (lowest 2xx;
  201 for a create; ``default`` only when no 2xx) with a body synthesized from the schema.
  A stub that documents 404 answers it when a path parameter that has an ``example``
  (or ``default``, ``enum``) in the spec is sent another value: the example is the one known item.

The stored object's schema (the *entity*) is the item GET's response, else the create
response, else the list's items, else the create body. Its id field is the property
named like the item parameter, else ``id``/``_id``/``uuid``, else ``<singular>Id``;
ids count 1, 2, ... as the entity's id type (integer, string, or UUID for ``format: uuid``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from qits.apibuild_schema import BuildSpec, as_dict, json_media

Kind = Literal["list", "create", "read", "replace", "update", "delete", "stub"]
_ITEM = {"get": "read", "put": "replace", "patch": "update", "delete": "delete"}
_SKIPPED_HEADERS = {"authorization", "content-type", "accept"}
_LIMIT_NAMES = ("limit", "pagesize", "page_size", "per_page", "perpage", "size", "max")
_OFFSET_NAMES = ("offset", "skip", "start")


@dataclass
class Param:
    """One route parameter as the generated function declares it."""

    py_name: str
    wire: str
    where: Literal["path", "query", "header", "cookie"]
    type_src: str
    required: bool
    constraints: dict[str, Any]
    known: list[Any] = field(default_factory=list)


@dataclass
class Resource:
    """A CRUD resource: where it lives and what it stores."""

    name: str
    collection: str
    item: str | None
    entity: Any
    id_field: str | None
    id_kind: str
    template: dict[str, Any]


@dataclass
class OpPlan:
    """Everything the renderer needs for one operation."""

    method: str
    path: str
    operation_id: str
    func: str
    kind: Kind
    resource: Resource | None
    params: list[Param]
    route_path: str
    body_model: str | None = None
    body_required: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    parent: tuple[str, int] | None = None
    ident: str | None = None
    parents: list[str] = field(default_factory=list)
    limit: str | None = None
    offset: str | None = None
    known: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def shape(path: str) -> tuple[str, ...]:
    """Path segments with parameter names erased: ``/a/{x}`` and ``/a/{y}`` are one shape."""
    return tuple("{}" if _is_param(s) else s for s in path.strip("/").split("/") if s)


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for ``name``, unique within ``taken`` (which it joins)."""
    ident = re.sub(r"\W", "_", name) or "p"
    if ident[0].isdigit():
        ident = f"p_{ident}"
    if keyword.iskeyword(ident) or ident in ("models", "rt", "app", "payload"):
        ident = f"{ident}_"
    base, n = ident, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


def find_resources(spec: BuildSpec) -> dict[str, Resource]:
    """Resources by collection path, following the rules in the module docstring."""
    paths: dict[str, Any] = spec.document.get("paths") or {}
    by_shape = {shape(p): p for p in paths}
    found: dict[str, Resource] = {}
    names: set[str] = set()
    for path in paths:
        segments = path.strip("/").split("/")
        if not segments[-1] or _is_param(segments[-1]):
            continue
        item = next(
            (by_shape[s] for s in [(*shape(path), "{}")] if s in by_shape),
            None,
        )
        coll_ops = paths[path] if isinstance(paths[path], dict) else {}
        item_ops = paths.get(item, {}) if item else {}
        listing = list_schema(spec, coll_ops.get("get"))
        if _json_body(spec, coll_ops.get("post")) is None:
            continue  # without a create nothing could ever be stored: stubs answer instead
        entity = _entity(spec, coll_ops, item_ops if isinstance(item_ops, dict) else {}, listing)
        item_param = item.rstrip("/").rsplit("/", 1)[-1][1:-1] if item else ""
        id_field, id_kind = _id_of(spec, entity, item_param, segments[-1], paths, item)
        template = spec.synthesize(entity) if entity is not None else {}
        found[path] = Resource(
            name=identifier(segments[-1], names),
            collection=path,
            item=item,
            entity=entity,
            id_field=id_field,
            id_kind=id_kind,
            template=template if isinstance(template, dict) else {},
        )
    return found


def _success(responses: dict[str, Any], prefer: int | None = None) -> str | None:
    codes = sorted(c for c in responses if c.isdigit() and c.startswith("2"))
    if prefer is not None and str(prefer) in codes:
        return str(prefer)
    if codes:
        return codes[0]
    for code in ("2XX", "2xx", "default"):
        if code in responses:
            return code
    return None


def response_schema(spec: BuildSpec, operation: Any, code: str | None) -> tuple[bool, str, Any]:
    """(documents a body, media type, schema) of one documented response."""
    if not isinstance(operation, dict) or code is None:
        return False, "application/json", None
    response = spec.resolve((operation.get("responses") or {}).get(code))
    content = response.get("content") if isinstance(response, dict) else None
    if not content:
        return False, "application/json", None
    media = json_media(content)
    if media is None:
        ct = sorted(content)[0]
        media_obj = content[ct] if isinstance(content[ct], dict) else {}
        return True, ct, media_obj.get("schema")
    return True, media[0], media[1].get("schema")


def list_schema(spec: BuildSpec, get: Any) -> tuple[Any, str | None] | None:
    """(items schema, envelope key or None) when a GET answers an array or an envelope."""
    if not isinstance(get, dict):
        return None
    _, _, schema = response_schema(spec, get, _success(get.get("responses") or {}))
    resolved = spec.resolve(schema)
    if not isinstance(resolved, dict):
        return None
    if resolved.get("type") == "array" or "items" in resolved:
        return resolved.get("items", {}), None
    props = _properties(spec, resolved)
    for key, sub in props.items():
        sub_r = spec.resolve(sub)
        if isinstance(sub_r, dict) and (sub_r.get("type") == "array" or "items" in sub_r):
            return sub_r.get("items", {}), key
    return None


def _properties(spec: BuildSpec, schema: Any, depth: int = 0) -> dict[str, Any]:
    """Properties of an object schema, allOf parts merged."""
    schema = spec.resolve(schema)
    if not isinstance(schema, dict) or depth > 8:
        return {}
    props: dict[str, Any] = {}
    for part in schema.get("allOf", []):
        props.update(_properties(spec, part, depth + 1))
    if isinstance(schema.get("properties"), dict):
        props.update(schema["properties"])
    return props


def _json_body(spec: BuildSpec, operation: Any) -> tuple[str, Any] | None:
    if not isinstance(operation, dict) or "requestBody" not in operation:
        return None
    body = spec.resolve(operation["requestBody"])
    media = json_media(body.get("content") if isinstance(body, dict) else None)
    return (media[0], media[1].get("schema")) if media else None


def _entity(spec: BuildSpec, coll: dict[str, Any], item: dict[str, Any], listing: Any) -> Any:
    for op, prefer in ((item.get("get"), None), (coll.get("post"), 201)):
        if isinstance(op, dict):
            code = _success(op.get("responses") or {}, prefer)
            _, _, schema = response_schema(spec, op, code)
            if schema is not None:
                return schema
    if listing is not None:
        return listing[0]
    body = _json_body(spec, coll.get("post"))
    return body[1] if body else None


def _id_of(
    spec: BuildSpec, entity: Any, item_param: str, collection: str, paths: dict[str, Any], item: Any
) -> tuple[str | None, str]:
    props = _properties(spec, entity)
    singular = collection[:-1] if collection.endswith("s") else collection
    candidates = [item_param, "id", "_id", "uuid", f"{singular}Id", f"{singular}_id"]
    id_field = next((c for c in candidates if c and c in props), None)
    param_schema: Any = {}
    if item and isinstance(paths.get(item), dict):
        for method_ops in [paths[item], *(paths[item].get(m, {}) for m in _ITEM)]:
            for raw in method_ops.get("parameters", []) if isinstance(method_ops, dict) else []:
                param = spec.resolve(raw)
                if isinstance(param, dict) and param.get("name") == item_param:
                    param_schema = spec.resolve(param.get("schema", {}))
    field_schema = spec.resolve(props.get(id_field, {})) if id_field else {}
    schemas = [s for s in (field_schema, param_schema) if isinstance(s, dict)]
    if any(s.get("format") == "uuid" for s in schemas):
        return id_field, "uuid"
    kind = (schemas[0].get("type") if schemas and schemas[0] else None) or (
        param_schema.get("type") if isinstance(param_schema, dict) else None
    )
    kinds = kind if isinstance(kind, list) else [kind]
    return id_field, "int" if "integer" in kinds else "str"


def classify(
    spec: BuildSpec, resources: dict[str, Resource], path: str, method: str
) -> tuple[Kind, Resource | None]:
    """The CRUD role of one operation, or ``stub``."""
    operation = (spec.document.get("paths") or {})[path][method]
    if path in resources:
        res = resources[path]
        if method == "get" and list_schema(spec, operation) is not None:
            return "list", res
        if method == "post" and _json_body(spec, operation) is not None:
            return "create", res
        return "stub", None
    for res in resources.values():
        if res.item == path and method in _ITEM:
            kind: Kind = _ITEM[method]  # type: ignore[assignment]
            if kind in ("replace", "update") and _json_body(spec, operation) is None:
                return "stub", None
            return kind, res
    return "stub", None


def py_type(spec: BuildSpec, schema: Any, where: str) -> tuple[str, dict[str, Any], list[str]]:
    """(type expression, Query/Path constraints, notes) for a parameter schema."""
    schema = spec.resolve(schema)
    if not isinstance(schema, dict):
        return "str", {}, []
    kinds = schema.get("type")
    kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
    enum = schema.get("enum") if isinstance(schema.get("enum"), list) else []
    if enum and all(isinstance(v, str | int) and not isinstance(v, bool) for v in enum):
        return f"Literal[{', '.join(repr(v) for v in enum)}]", {}, []
    if kind == "array" and where != "path":
        inner, _, notes = py_type(spec, schema.get("items", {}), where)
        return f"list[{inner}]", {}, notes
    constraints: dict[str, Any] = {}
    if kind in ("integer", "number"):
        for key, strict, loose in (("minimum", "gt", "ge"), ("maximum", "lt", "le")):
            excl = schema.get(f"exclusive{key.title()}")
            if isinstance(excl, int | float) and not isinstance(excl, bool):
                constraints[strict] = excl
            elif key in schema:
                constraints[strict if excl is True else loose] = schema[key]
        return ("int" if kind == "integer" else "float"), constraints, []
    if kind == "boolean":
        return "bool", {}, []
    if kind in ("object", "array"):
        return "str", {}, [f"{where} parameter of type {kind} is taken as a plain string"]
    if schema.get("format") == "uuid":
        return "UUID", {}, []
    if "minLength" in schema:
        constraints["min_length"] = schema["minLength"]
    if "maxLength" in schema:
        constraints["max_length"] = schema["maxLength"]
    if isinstance(schema.get("pattern"), str):
        try:
            re.compile(schema["pattern"])
            constraints["pattern"] = schema["pattern"]
        except re.error:
            pass
    return "str", constraints, []


def build_params(
    spec: BuildSpec, path: str, operation: dict[str, Any], taken: set[str]
) -> tuple[list[Param], str, list[str]]:
    """Typed parameters, the route path rewritten to their Python names, and notes."""
    path_item = (spec.document.get("paths") or {})[path]
    notes: list[str] = []
    params: list[Param] = []
    route = path
    merged = spec.raw_parameters(path_item, operation)
    declared = {p["name"]: p for p in merged if p["in"] == "path"}
    for segment in re.findall(r"{([^}]+)}", path):
        param = declared.get(segment, {"name": segment, "schema": {"type": "string"}})
        type_src, constraints, more = py_type(spec, param.get("schema", {}), "path")
        py = identifier(segment, taken)
        route = route.replace("{" + segment + "}", "{" + py + "}", 1)
        params.append(Param(py, segment, "path", type_src, True, constraints, _known(param)))
        notes += more
    for param in merged:
        where = param["in"]
        if where == "path" or where not in ("query", "header", "cookie"):
            continue
        if where == "header" and str(param["name"]).lower() in _SKIPPED_HEADERS:
            continue
        type_src, constraints, more = py_type(spec, param.get("schema", {}), where)
        py = identifier(str(param["name"]), taken)
        required = bool(param.get("required"))
        params.append(Param(py, str(param["name"]), where, type_src, required, constraints))
        notes += more
    return params, route, notes


def _known(param: dict[str, Any]) -> list[Any]:
    """Values a path parameter documents (example, examples, default, enum)."""
    schema = as_dict(param.get("schema"))
    values: list[Any] = []
    for holder in (param, schema):
        values += [holder[k] for k in ("example", "default") if k in holder]
        examples = holder.get("examples")
        if isinstance(examples, list):
            values += examples
        elif isinstance(examples, dict):
            values += [
                e["value"] for e in examples.values() if isinstance(e, dict) and "value" in e
            ]
    if isinstance(schema.get("enum"), list):
        values += schema["enum"]
    return [str(v) for v in values if isinstance(v, str | int | float)]


def paging(params: list[Param]) -> tuple[str | None, str | None]:
    """The Python names of the integer query parameters that page a list (limit, offset)."""
    ints = {p.wire.lower(): p.py_name for p in params if p.where == "query" and p.type_src == "int"}
    limit = next((ints[n] for n in _LIMIT_NAMES if n in ints), None)
    offset = next((ints[n] for n in _OFFSET_NAMES if n in ints), None)
    return limit, offset


def security(
    spec: BuildSpec, operation: dict[str, Any]
) -> tuple[list[list[tuple[str, str]]], list[str]]:
    """The operation's security alternatives as (kind, name) checks, and notes."""
    requirements = operation.get("security", spec.document.get("security"))
    if not isinstance(requirements, list) or not requirements:
        return [], []
    schemes = (spec.document.get("components") or {}).get("securitySchemes") or {}
    alternatives: list[list[tuple[str, str]]] = []
    notes: list[str] = []
    for requirement in requirements:
        if not isinstance(requirement, dict) or not requirement:
            return [], []  # an empty requirement makes credentials optional
        checks: list[tuple[str, str]] = []
        for name in requirement:
            scheme = spec.resolve(schemes.get(name))
            kind = scheme.get("type") if isinstance(scheme, dict) else None
            if kind == "apiKey" and scheme.get("in") in ("header", "query", "cookie"):
                checks.append((str(scheme["in"]), str(scheme.get("name", ""))))
            elif kind == "http":
                checks.append((str(scheme.get("scheme", "bearer")).lower(), "Authorization"))
            elif kind in ("oauth2", "openIdConnect"):
                checks.append(("bearer", "Authorization"))
            else:
                notes.append(f"security scheme {name!r} ({kind}) is not enforced")
        if checks:
            alternatives.append(checks)
    return alternatives, notes


def documented_reply(
    spec: BuildSpec, operation: dict[str, Any], status: int, message: str
) -> tuple[int, Any] | None:
    """(status, synthesized body) for an error the operation documents (exact, NXX, default)."""
    responses = operation.get("responses") or {}
    for code in (str(status), f"{status // 100}XX", f"{status // 100}xx", "default"):
        if code in responses:
            has_body, media, schema = response_schema(spec, operation, code)
            if not has_body or "json" not in media:
                return status, None
            return status, spec.synthesize(schema or {}, status=status, message=message)
    return None


def success(operation: dict[str, Any], kind: Kind) -> str | None:
    """The documented success code the operation answers."""
    prefer = {"create": 201, "delete": 204}.get(kind)
    return _success(operation.get("responses") or {}, prefer)
