"""Read an OpenAPI 3.0 or 3.1 document into the operations test generation needs.

What this module does, and why it is shaped so:

- **Loading**: JSON or YAML (YAML is a superset of JSON, so one parser,
  :func:`yaml.safe_load`, reads both). YAML turns ``200:`` into an integer key
  and ``2011-01-21`` into a date; both are normalised back to the JSON values
  the document means (string keys, ISO strings) so nothing downstream sees a
  type JSON cannot hold.
- **Version**: ``openapi: 3.0.x`` or ``3.1.x``; Swagger 2.0 and anything else is
  a :class:`~qits.errors.SpecError` (convert it to 3.x first).
- **$ref**: resolved with the ``referencing`` library (JSON-pointer escaping,
  fragments, relative URIs), including refs into other files next to the
  document (``common.yaml#/components/schemas/Error``), which are read on first
  use and cached. A ref that cannot be resolved raises :class:`Unresolved`,
  which the generator reports against the operation that needed it.
- **Resources**: operations are grouped by the first *static* path segment after
  the longest static prefix shared by all paths that still leaves every path a
  static segment: ``/api/users`` and ``/api/users/{id}`` are resource
  ``users``; ``/pets`` and ``/pets/{petId}`` are ``pets``; ``/`` is ``root``.
  Paths rather than tags, because every operation has exactly one path while
  tags are optional and many-to-many, and because a CRUD flow (create through
  the collection, then use the item) stays inside one resource module.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from qits.errors import SpecError

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
"""The methods a Path Item may hold, in the order the specification lists them."""

INLINE_URI = "urn:qits:inline-spec"
"""Base URI of a document given as a dict or text: relative file refs cannot resolve."""


class Unresolved(Exception):
    """A ``$ref`` that points nowhere; reported per operation, never fatal."""

    def __init__(self, ref: str, base_uri: str) -> None:
        self.ref = ref
        super().__init__(f'$ref "{ref}" cannot be resolved')
        self.base_uri = base_uri


def _normalise(value: Any) -> Any:
    """YAML values as the JSON values they stand for (string keys, ISO dates)."""
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def parse_document(text: str, source: str) -> Any:
    """Parse JSON or YAML text; ``source`` names it in the error."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source} is neither JSON nor YAML: {exc}") from exc
    return _normalise(loaded)


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f'cannot read OpenAPI document "{path}": {exc.strerror}') from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f'"{path}" is not UTF-8 text: {exc}') from exc
    return parse_document(text, str(path))


@dataclass(frozen=True)
class Parameter:
    """One path, query, header or cookie parameter of an operation."""

    name: str
    location: str
    required: bool
    schema: Any
    base_uri: str
    example: Any = None
    has_example: bool = False
    style: str | None = None
    explode: bool | None = None
    content_only: bool = False


@dataclass(frozen=True)
class Operation:
    """One HTTP operation, with its parameters and refs already followed one level."""

    method: str
    path: str
    operation_id: str | None
    parameters: tuple[Parameter, ...]
    request_body: Mapping[str, Any] | None
    request_body_base: str
    responses: Mapping[str, tuple[Mapping[str, Any], str]]
    security: tuple[Mapping[str, Any], ...] | None
    tags: tuple[str, ...]
    has_callbacks: bool
    problems: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """How reports name the operation: its operationId, else ``METHOD path``."""
        return self.operation_id or f"{self.method.upper()} {self.path}"


class Spec:
    """A loaded OpenAPI 3.x document and the means to follow its ``$ref``s."""

    def __init__(self, document: Mapping[str, Any], base_uri: str) -> None:
        self.document = document
        self.base_uri = base_uri
        self.version = detect_version(document)
        self._files: dict[str, Resource[Any]] = {}
        self.skipped: list[tuple[str, str]] = []
        """Set by :meth:`operations`: what could not be read, as (label, reason)."""
        # attrs-generated __init__ arguments that mypy does not see.
        registry: Registry[Any] = Registry(retrieve=self._retrieve)  # type: ignore[call-arg]
        self._resolver = registry.with_resource(base_uri, Resource.opaque(document)).resolver()

    @property
    def title(self) -> str:
        """``info.title``, or ``API`` when the document has none."""
        info = self.document.get("info") or {}
        return str(info.get("title") or "API")

    def _retrieve(self, uri: str) -> Resource[Any]:
        # Only files next to the document: the generator never fetches from the network.
        if urlsplit(uri).scheme != "file":
            raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
        if uri not in self._files:
            try:
                contents = _read_file(Path(url2pathname(urlsplit(uri).path)))
            except SpecError as exc:
                raise NoSuchResource(ref=uri) from exc  # type: ignore[call-arg]
            self._files[uri] = Resource.opaque(contents)
        return self._files[uri]

    def lookup(self, ref: str, base_uri: str) -> tuple[Any, str]:
        """The value ``ref`` points at and the base URI refs inside it are relative to."""
        # urljoin does not join onto a urn:, so a fragment-only ref is appended by hand.
        target = urldefrag(base_uri).url + ref if ref.startswith("#") else urljoin(base_uri, ref)
        try:
            resolved = self._resolver.lookup(target)
        except Unresolvable as exc:
            raise Unresolved(ref, base_uri) from exc
        return resolved.contents, urldefrag(target).url

    def deref(self, value: Any, base_uri: str) -> tuple[Any, str]:
        """Follow a chain of ``$ref`` objects (not into schemas' children)."""
        seen: set[str] = set()
        while isinstance(value, Mapping) and isinstance(value.get("$ref"), str):
            key = f"{base_uri}|{value['$ref']}"
            if key in seen:
                raise Unresolved(value["$ref"], base_uri)
            seen.add(key)
            value, base_uri = self.lookup(value["$ref"], base_uri)
        return value, base_uri

    def resolve(self, node: Any) -> Any:
        """``node`` with its ``$ref`` chain followed from the document; ``{}`` when it
        points nowhere (or in a circle). For callers that tolerate a missing part."""
        try:
            value, _ = self.deref(node, self.base_uri)
        except Unresolved:
            return {}
        return value

    def parameters(
        self, item: Mapping[str, Any], operation: Mapping[str, Any], base: str, label: str
    ) -> tuple[list[tuple[Mapping[str, Any], str]], list[str]]:
        """Path-level then operation-level parameters with refs followed, the operation's
        overriding by (name, in), each with its base URI; and what was malformed."""
        problems: list[str] = []
        merged: dict[tuple[str, str], tuple[Mapping[str, Any], str]] = {}
        for where, source in (("path item", item), (label, operation)):
            entries = source.get("parameters") or []
            if not isinstance(entries, list):
                problems.append(f"parameters of {where}: not a list")
                continue
            for entry in entries:
                try:
                    param, param_base = self.deref(entry, base)
                except Unresolved as exc:
                    problems.append(f"parameter {exc}")
                    continue
                if not isinstance(param, Mapping) or "name" not in param or "in" not in param:
                    problems.append(f"malformed parameter {json.dumps(param, default=str)[:80]}")
                    continue
                merged[(str(param["name"]), str(param["in"]))] = (param, param_base)
        return list(merged.values()), problems

    def operations(self) -> list[Operation]:
        """Every operation under ``paths``, sorted by path then method.

        What cannot be read at all (a path item behind a broken ref, a malformed
        operation) is left out and listed in :attr:`skipped` as (label, reason).
        """
        paths = self.document.get("paths") or {}
        found: list[Operation] = []
        self.skipped = []
        if not isinstance(paths, Mapping):
            self.skipped.append(("paths", "not an object"))
            return found
        for path in sorted(paths):
            try:
                item, item_base = self.deref(paths[path], self.base_uri)
            except Unresolved as exc:
                self.skipped.append((f"path {path}", str(exc)))
                continue
            if not isinstance(item, Mapping):
                self.skipped.append((f"path {path}", "the path item is not an object"))
                continue
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                label = f"{method.upper()} {path}"
                if not isinstance(item[method], Mapping):
                    self.skipped.append((label, "the operation is not an object"))
                    continue
                try:
                    found.append(self._operation(path, method, item, item_base))
                except (AttributeError, TypeError, ValueError) as exc:
                    # Shapes the specification forbids (a list where an object goes…).
                    self.skipped.append((label, f"malformed operation: {exc}"))
        return found

    def webhooks(self) -> list[str]:
        """Names of 3.1 ``webhooks``: requests the API makes, so nothing to test here."""
        return sorted((self.document.get("webhooks") or {}).keys())

    def _operation(self, path: str, method: str, item: Mapping[str, Any], base: str) -> Operation:
        raw = item[method]
        merged, problems = self.parameters(item, raw, base, f"{method.upper()} {path}")
        params = [_parameter(param, param_base) for param, param_base in merged]
        body: Mapping[str, Any] | None = None
        body_base = base
        if raw.get("requestBody") is not None:
            try:
                body, body_base = self.deref(raw["requestBody"], base)
            except Unresolved as exc:
                problems.append(f"request body {exc}")
        responses: dict[str, tuple[Mapping[str, Any], str]] = {}
        for code, response in (raw.get("responses") or {}).items():
            try:
                resolved, resolved_base = self.deref(response, base)
            except Unresolved as exc:
                problems.append(f"response {code}: {exc}")
                continue
            if isinstance(resolved, Mapping):
                responses[str(code).upper() if str(code) != "default" else "default"] = (
                    resolved,
                    resolved_base,
                )
        security = raw.get("security", self.document.get("security"))
        return Operation(
            method=method,
            path=path,
            operation_id=raw.get("operationId"),
            parameters=tuple(params),
            request_body=body,
            request_body_base=body_base,
            responses=responses,
            security=tuple(security) if isinstance(security, list) else None,
            tags=tuple(str(t) for t in raw.get("tags") or ()),
            has_callbacks=bool(raw.get("callbacks")),
            problems=tuple(problems),
        )

    def security_schemes(self) -> dict[str, dict[str, Any]]:
        """``components.securitySchemes`` with refs followed; unreadable ones left out."""
        schemes: dict[str, dict[str, Any]] = {}
        raw = ((self.document.get("components") or {}).get("securitySchemes")) or {}
        for name in sorted(raw):
            try:
                scheme, _ = self.deref(raw[name], self.base_uri)
            except Unresolved:
                continue
            if isinstance(scheme, Mapping):
                schemes[name] = dict(scheme)
        return schemes


def _parameter(param: Mapping[str, Any], base: str) -> Parameter:
    schema = param.get("schema")
    content_only = False
    if schema is None and isinstance(param.get("content"), Mapping) and param["content"]:
        # A parameter described by a media type instead of a schema (rare).
        first = next(iter(param["content"].values()))
        schema = first.get("schema") if isinstance(first, Mapping) else None
        content_only = True
    examples = param.get("examples")
    example, has_example = param.get("example"), "example" in param
    if not has_example and isinstance(examples, Mapping) and examples:
        first_example = next(iter(examples.values()))
        if isinstance(first_example, Mapping) and "value" in first_example:
            example, has_example = first_example["value"], True
    return Parameter(
        name=str(param["name"]),
        location=str(param["in"]),
        required=bool(param.get("required", param["in"] == "path")),
        schema=schema if schema is not None else {},
        base_uri=base,
        example=example,
        has_example=has_example,
        style=param.get("style"),
        explode=param.get("explode"),
        content_only=content_only,
    )


def detect_version(document: Mapping[str, Any]) -> str:
    """``"3.0"`` or ``"3.1"``; anything else is a :class:`SpecError`."""
    if not isinstance(document, Mapping):
        raise SpecError("the document is not a JSON/YAML object — is this an OpenAPI document?")
    declared = str(document.get("openapi", ""))
    if declared.startswith("3.0"):
        return "3.0"
    if declared.startswith("3.1"):
        return "3.1"
    if "swagger" in document:
        raise SpecError(
            f"Swagger {document['swagger']} documents are not supported — convert it to "
            "OpenAPI 3.x first (e.g. with swagger2openapi)"
        )
    raise SpecError(
        f'unsupported "openapi" version "{declared}" — OpenAPI 3.0 and 3.1 are supported'
    )


def load_spec(source: str | Path | Mapping[str, Any]) -> Spec:
    """Load a document from a path, from JSON/YAML text, or from an already parsed dict.

    A ``str`` is a path unless it contains a newline or starts with ``{``; relative
    file refs resolve only for documents loaded from a path.
    """
    if isinstance(source, Mapping):
        return Spec(_normalise(source), INLINE_URI)
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        return Spec(parse_document(source, "the given text"), INLINE_URI)
    path = Path(source).resolve()
    return Spec(_read_file(path), path.as_uri())


_TEMPLATE = re.compile(r"^\{[^{}]+\}$")


def segments(path: str) -> list[str]:
    """The non-empty segments of a path template."""
    return [s for s in path.split("/") if s]


def is_template(segment: str) -> bool:
    """Whether a segment is a single ``{param}``."""
    return bool(_TEMPLATE.match(segment))


def resource_names(paths: list[str]) -> dict[str, str]:
    """Map each path to its resource name (see the module docstring for the rule)."""
    split = {p: segments(p) for p in paths}
    prefix = 0
    while True:
        heads = {tuple(s[: prefix + 1]) for s in split.values()}
        if len(heads) != 1 or not split:
            break
        (head,) = heads
        if len(head) <= prefix or is_template(head[-1]):
            break
        # Every path must keep a static segment after the prefix.
        if not all(any(not is_template(x) for x in s[prefix + 1 :]) for s in split.values()):
            break
        prefix += 1
    names: dict[str, str] = {}
    for path, segs in split.items():
        static = [s for s in segs[prefix:] if not is_template(s)]
        names[path] = identifier(static[0]) if static else "root"
    return names


def identifier(text: str) -> str:
    """A lowercase identifier made of ``text``: ``find pet by id`` → ``find_pet_by_id``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", spaced).strip("_").lower()
    if not ident:
        return "x"
    return f"r_{ident}" if ident[0].isdigit() else ident
