"""Decide, per operation, which tests to generate and with which values.

The rules are those of :mod:`qits.testgen` (its docstring is the reference);
this module turns one :class:`~qits.openapi.Operation` into an
:class:`OperationPlan` — plain data the renderer prints — and records what it
could not handle in the plan's ``unsupported`` list instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qits.openapi import (
    Operation,
    Parameter,
    Spec,
    Unresolved,
    identifier,
    is_template,
    segments,
)
from qits.openapi_schema import Cycle, SchemaTools

MISSING_INT = 999999999
MISSING_UUID = "ffffffff-ffff-4fff-bfff-ffffffffffff"
MISSING_STRING = "does-not-exist-qits"
_IGNORED_HEADERS = {"accept", "content-type", "authorization"}
_DELIMITERS = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}


def is_json(media_type: str) -> bool:
    """``application/json``, ``*/json`` and ``*+json`` (parameters after ``;`` ignored)."""
    base = media_type.split(";", 1)[0].strip().lower()
    return base.endswith("/json") or base.endswith("+json")


@dataclass
class Chain:
    """How to create an item so that an item path has real path parameter values."""

    item_path: str
    collection: str
    helper: str
    item_param: str
    post: OperationPlan
    parent: Chain | None
    parent_mapping: dict[str, str]
    """collection's path parameter → parent's item path parameter (by position)."""


@dataclass
class OperationPlan:
    """Everything the renderer needs to print the tests of one operation."""

    label: str
    slug: str
    method: str
    path: str
    resource: str
    path_values: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body_kind: str | None = None
    body: Any = None
    security: list[dict[str, Any]] | None = None
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    success_codes: list[int] = field(default_factory=list)
    success_any_2xx: bool = False
    generate_success: bool = True
    chain: Chain | None = None
    not_found: tuple[str, Any] | None = None
    wrong_type: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)
    unauthorized: bool = False
    request_schema: dict[str, Any] | None = None
    suggested_valid: list[Any] = field(default_factory=list)
    suggested_invalid: list[Any] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def test_names(self) -> list[str]:
        """Names of the generated test functions, in the order they are printed."""
        names = []
        if self.generate_success:
            names.append(f"test_{self.slug}_succeeds")
        if self.not_found is not None:
            names.append(f"test_{self.slug}_not_found")
        names += [f"test_{self.slug}_rejects_non_numeric_{p}" for p in self.wrong_type_idents()]
        if self.missing_fields:
            names.append(f"test_{self.slug}_rejects_body_without_required_field")
        if self.unauthorized:
            names.append(f"test_{self.slug}_requires_credentials")
        if self.suggested_valid:
            names.append(f"test_{self.slug}_accepts_suggested_body")
        if self.suggested_invalid:
            names.append(f"test_{self.slug}_rejects_suggested_invalid_body")
        return names

    def wrong_type_idents(self) -> list[str]:
        """Path parameter names of the wrong-type tests as identifier suffixes."""
        return [identifier(p) for p in self.wrong_type]

    def not_provoked(self) -> list[str]:
        """Documented status codes no generated test provokes."""
        provoked: set[str] = set()
        if self.generate_success:
            provoked |= {str(c) for c in self.success_codes}
            if self.success_any_2xx or any(k == "2XX" for k in self.responses):
                provoked.add("2XX")
        if self.not_found is not None:
            provoked.add("404")
        if self.wrong_type or self.missing_fields or self.suggested_invalid:
            provoked |= {"400", "422", "4XX"}
        if self.not_found is not None or self.unauthorized:
            provoked.add("4XX")
        if self.unauthorized:
            provoked.add("401")
        return [code for code in self.responses if code != "default" and code not in provoked]


class Planner:
    """Plans the operations of one spec; knows all of them to find CRUD collections."""

    def __init__(self, spec: Spec, tools: SchemaTools, operations: list[Operation]) -> None:
        self.spec = spec
        self.tools = tools
        self.by_key = {(op.path, op.method): op for op in operations}
        self.schemes = spec.security_schemes()
        self._chains: dict[str, Chain | None] = {}

    def plan(self, op: Operation, slug: str, resource: str) -> OperationPlan:
        """The plan for ``op``; problems are recorded on the plan, not raised."""
        plan = OperationPlan(
            op.operation_id or f"{op.method.upper()} {op.path}", slug, op.method, op.path, resource
        )
        plan.unsupported += list(op.problems)
        if op.has_callbacks:
            plan.unsupported.append("callbacks are requests the API sends; not tested")
        self.tools.notes = []
        self._parameters(op, plan)
        self._body(op, plan)
        self._responses(op, plan)
        self._security(op, plan)
        plan.chain = self.chain(op.path)
        self._negative_tests(op, plan)
        plan.notes += [f"request value: {n}" for n in dict.fromkeys(self.tools.notes)]
        return plan

    # -- parts of the request -----------------------------------------------------------

    def value_of(self, param: Parameter) -> Any:
        """The value a valid request sends for ``param``."""
        if param.has_example:
            return param.example
        return self.tools.example(param.schema, param.base_uri, "request", key=param.name)

    def _parameters(self, op: Operation, plan: OperationPlan) -> None:
        for param in op.parameters:
            if param.location == "path":
                plan.path_values[param.name] = self.value_of(param)
            elif not param.required:
                continue
            elif param.location == "query":
                value = self.value_of(param)
                if isinstance(value, dict):
                    plan.unsupported.append(f"query parameter {param.name}: object values")
                    plan.generate_success = False
                elif (isinstance(value, list) and param.explode is False) or (
                    isinstance(value, list) and param.style in ("spaceDelimited", "pipeDelimited")
                ):
                    sep = _DELIMITERS.get(param.style or "form", ",")
                    plan.query[param.name] = sep.join(_text(v) for v in value)
                else:
                    plan.query[param.name] = value
            elif param.location == "header":
                if param.name.lower() not in _IGNORED_HEADERS:
                    plan.headers[param.name] = _text(self.value_of(param))
            elif param.location == "cookie":
                cookie = f"{param.name}={_text(self.value_of(param))}"
                previous = plan.headers.get("Cookie")
                plan.headers["Cookie"] = f"{previous}; {cookie}" if previous else cookie
            else:
                plan.unsupported.append(
                    f'parameter {param.name}: unknown location "{param.location}"'
                )
        for name in [s[1:-1] for s in segments(op.path) if is_template(s)]:
            if name not in plan.path_values:
                plan.path_values[name] = "example"
                plan.unsupported.append(f"path parameter {name} is not declared; sending 'example'")

    def _body(self, op: Operation, plan: OperationPlan) -> None:
        body = op.request_body
        if not isinstance(body, Mapping):
            return
        content = body.get("content") or {}
        required = bool(body.get("required", False))
        json_type = next((m for m in content if is_json(m)), None)
        form_type = next(
            (m for m in content if m.split(";")[0].strip() == "application/x-www-form-urlencoded"),
            None,
        )
        chosen = json_type or form_type
        if chosen is None:
            if content:
                kinds = ", ".join(sorted(content))
                plan.unsupported.append(f"request body media type {kinds}")
                if required:
                    plan.generate_success = False
            return
        media = content[chosen] if isinstance(content[chosen], Mapping) else {}
        schema = media.get("schema", {})
        base = op.request_body_base
        if "example" in media:
            plan.body = media["example"]
        else:
            plan.body = self.tools.example(schema, base, "request")
        plan.body_kind = "json" if chosen == json_type else "form"
        if plan.body_kind == "form" and not (
            isinstance(plan.body, dict)
            and all(not isinstance(v, dict | list) for v in plan.body.values())
        ):
            plan.unsupported.append("form body with nested values")
            plan.body_kind = None
            if required:
                plan.generate_success = False
            return
        if plan.body_kind == "json":
            fields, is_object = self.tools.request_fields(schema, base)
            if is_object and isinstance(plan.body, dict):
                plan.missing_fields = [f for f in fields if f in plan.body]
            try:
                plan.request_schema = self.tools.bundle(schema, base, "request")
            except (Unresolved, Cycle) as exc:
                plan.unsupported.append(f"request body schema: {exc}")

    def _responses(self, op: Operation, plan: OperationPlan) -> None:
        for code, (response, base) in op.responses.items():
            content = response.get("content") or {}
            json_type = next((m for m in content if is_json(m)), None)
            entry: dict[str, Any] = {"json": json_type is not None, "schema": None}
            if json_type is None and content:
                plan.notes.append(
                    f"response {code}: media type {', '.join(sorted(content))} not validated"
                )
            if json_type is not None:
                media = content[json_type] if isinstance(content[json_type], Mapping) else {}
                if "schema" in media:
                    try:
                        entry["schema"] = self.tools.bundle(media["schema"], base, "response")
                    except (Unresolved, Cycle) as exc:
                        plan.unsupported.append(f"response {code} schema: {exc}")
                        entry["json"] = False
            plan.responses[code] = entry
        numeric = sorted(int(c) for c in plan.responses if c.isdigit())
        ok = [c for c in numeric if 200 <= c < 300]
        redirects = [c for c in numeric if 300 <= c < 400]
        if ok or "2XX" in plan.responses:
            plan.success_codes = ok
            plan.success_any_2xx = "2XX" in plan.responses
        elif redirects:
            plan.success_codes = redirects
        else:
            plan.success_any_2xx = True
            plan.notes.append("no 2xx response documented: the success test accepts any 2xx")

    def _security(self, op: Operation, plan: OperationPlan) -> None:
        if not op.security:
            return
        plan.security = [dict(alt) for alt in op.security if isinstance(alt, Mapping)]
        for alternative in plan.security:
            for name in alternative:
                scheme = self.schemes.get(name)
                if scheme is None:
                    plan.unsupported.append(f'security scheme "{name}" is not defined')
                elif scheme.get("type") == "mutualTLS" or (
                    scheme.get("type") == "http"
                    and str(scheme.get("scheme", "")).lower() not in ("bearer", "basic")
                ):
                    plan.unsupported.append(
                        f'security scheme "{name}" cannot be satisfied from env'
                    )
        anonymous = any(not alt for alt in plan.security)
        plan.unauthorized = not anonymous and "401" in plan.responses

    # -- CRUD chains and negative tests -------------------------------------------------

    def chain(self, path: str) -> Chain | None:
        """How to create an item for ``path``, if it is an item path of a POST collection."""
        if path in self._chains:
            return self._chains[path]
        self._chains[path] = None  # guards against self-reference while planning
        segs = segments(path)
        if not segs or not is_template(segs[-1]):
            return None
        collection = "/" + "/".join(segs[:-1]) if len(segs) > 1 else "/"
        post = self.by_key.get((collection, "post"))
        if post is None:
            return None
        post_plan = OperationPlan(post.label, "", "post", collection, "")
        self._parameters(post, post_plan)
        self._body(post, post_plan)
        self._security(post, post_plan)
        if not post_plan.generate_success:
            return None
        parent: Chain | None = None
        mapping: dict[str, str] = {}
        templated = [i for i, s in enumerate(segs[:-1]) if is_template(s)]
        if templated:
            parent_path = "/" + "/".join(segs[: templated[-1] + 1])
            parent = self.chain(parent_path)
            if parent is not None:
                own = [s[1:-1] for s in segs[:-1] if is_template(s)]
                theirs = [s[1:-1] for s in segments(parent_path) if is_template(s)]
                mapping = dict(zip(own, theirs, strict=False))
        found = Chain(
            item_path=path,
            collection=collection,
            helper=f"_create_{identifier(collection) if collection != '/' else 'root'}",
            item_param=segs[-1][1:-1],
            post=post_plan,
            parent=parent,
            parent_mapping=mapping,
        )
        self._chains[path] = found
        return found

    def _negative_tests(self, op: Operation, plan: OperationPlan) -> None:
        path_params = {p.name: p for p in op.parameters if p.location == "path"}
        names = [s[1:-1] for s in segments(op.path) if is_template(s)]
        if names and "404" in plan.responses:
            last = path_params.get(names[-1])
            missing = self._missing_value(last) if last is not None else MISSING_STRING
            if missing is None:
                plan.notes.append(f"404 documented but no value of {names[-1]} surely missing")
            else:
                plan.not_found = (names[-1], missing)
        for name in names:
            param = path_params.get(name)
            if param is not None and self._kind(param) in ("integer", "number"):
                plan.wrong_type.append(name)

    def _kind(self, param: Parameter) -> str:
        try:
            keywords, _, _, _ = self.tools.flatten(param.schema, param.base_uri)
        except (Unresolved, Cycle):
            return ""
        declared = keywords.get("type")
        kinds = declared if isinstance(declared, list) else [declared]
        return next((str(k) for k in kinds if k and k != "null"), "")

    def _missing_value(self, param: Parameter) -> Any:
        try:
            keywords, _, _, _ = self.tools.flatten(param.schema, param.base_uri)
        except (Unresolved, Cycle):
            keywords = {}
        if keywords.get("enum") or "const" in keywords:
            return None
        kind = self._kind(param)
        if kind in ("integer", "number"):
            high = keywords.get("maximum")
            if isinstance(high, int | float) and high < MISSING_INT:
                return None
            return MISSING_INT
        if keywords.get("format") == "uuid":
            return MISSING_UUID
        max_len = keywords.get("maxLength")
        if "pattern" in keywords or (isinstance(max_len, int) and max_len < len(MISSING_STRING)):
            return None
        return MISSING_STRING


def _text(value: Any) -> str:
    """A parameter value as the text a header, cookie or delimited query carries."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
