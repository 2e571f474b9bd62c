"""The OpenAPI document a run is about: where it comes from, whether it is valid, lint rules.

Sources, first found wins (:func:`find_spec`):

1. the ``spec`` parameter or workflow input: inline YAML/JSON text (it has a newline
   or starts with ``{``), else a ``file://`` reference or a path;
2. the GitLab issue (or merge request) that started the run: the first fenced code
   block tagged ``yaml``, ``yml`` or ``json`` in ``object_attributes.description``
   whose text contains ``openapi`` as a key.

:func:`check_spec` validates the document with openapi-spec-validator (each error
with its path in the document, ``paths./pets.get.responses.200``) and applies the
lint rules below; both kinds are :class:`Problem`.

Lint rules (``rule`` of a :class:`Problem`):

* ``operation-id``: every operation has a non-empty ``operationId`` — the test
  generator, the builder and the docs name operations by it.
* ``operation-id-unique``: no two operations share one.
* ``error-response``: an operation that takes input a client must get right — a
  path parameter (it may name nothing), a required parameter (its own or its path
  item's) or a request body — documents at least one client error: an explicit
  ``4xx`` code or the ``4XX`` range. ``default`` does not count: it says nothing
  about which status a bad request gets, which is what the generated tests check.
  Optional parameters alone (paging, filters) do not ask for one: leaving them out
  is always valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qits.errors import SpecError
from qits.openapi import HTTP_METHODS, parse_document

__all__ = ["Problem", "check_spec", "fenced_spec", "find_spec", "operations", "parse_spec"]

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*(yaml|yml|json)[^\n]*\n(.*?)^[ \t]*\1", re.M | re.S)
_OPENAPI_KEY = re.compile(r"""(?:^|[{,])\s*["']?openapi["']?\s*:""", re.M)


@dataclass(frozen=True)
class Problem:
    """One problem with the document: ``rule`` is ``schema`` for a validation error."""

    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(document)'}: {self.message} [{self.rule}]"


def fenced_spec(description: str) -> str | None:
    """The first fenced yaml/yml/json block of ``description`` with an ``openapi`` key."""
    for match in _FENCE.finditer(description or ""):
        body = match.group(3)
        if _OPENAPI_KEY.search(body):
            return body
    return None


def find_spec(spec: str | None, event: dict[str, Any] | None, read: Any) -> tuple[str, str] | None:
    """``(text, where it came from)`` of the run's document, or None when there is none.

    ``read(reference) -> Path`` resolves a non-inline ``spec`` (the artifact store's
    ``resolve``).
    """
    if spec:
        if "\n" in spec or spec.lstrip().startswith("{"):
            return spec, "the spec input"
        path: Path = read(spec)
        return path.read_text(encoding="utf-8"), str(path)
    if event:
        attrs = event.get("object_attributes")
        description = attrs.get("description") if isinstance(attrs, dict) else None
        text = fenced_spec(description or "")
        if text is not None:
            iid = attrs.get("iid") if isinstance(attrs, dict) else None
            return text, f"the description of #{iid}" if iid is not None else "the issue"
    return None


def parse_spec(text: str, source: str) -> dict[str, Any]:
    """The parsed document; :class:`SpecError` when it is not a YAML/JSON object."""
    data = parse_document(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"{source} is not a YAML/JSON object — is it an OpenAPI document?")
    return data


def operations(doc: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(path, method, operation, path item)`` for every operation, in document order."""
    paths = doc.get("paths")
    for path, item in paths.items() if isinstance(paths, dict) else []:
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield str(path), method, operation, item


def check_spec(doc: dict[str, Any]) -> tuple[list[Problem], list[Problem]]:
    """``(validation errors, lint violations)`` of ``doc``."""
    return _validate(doc), _lint(doc)


def _validate(doc: dict[str, Any]) -> list[Problem]:
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    version = str(doc.get("openapi", ""))
    if version.startswith("3.0"):
        validator: Any = OpenAPIV30SpecValidator(doc)
    elif version.startswith("3.1"):
        validator = OpenAPIV31SpecValidator(doc)
    else:
        found = f'"openapi: {version}"' if version else 'no "openapi" field'
        return [Problem("schema", "openapi", f"{found}: OpenAPI 3.0 or 3.1 is required")]
    problems = []
    try:
        for error in validator.iter_errors():
            where = ".".join(str(p) for p in getattr(error, "absolute_path", []))
            problems.append(Problem("schema", where, str(getattr(error, "message", error))))
    except Exception as exc:  # an unresolvable $ref aborts the validator
        problems.append(Problem("schema", "", f"{type(exc).__name__}: {exc}"))
    return problems


def _lint(doc: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path, method, operation, item in operations(doc):
        where = f"paths.{path}.{method}"
        op_id = operation.get("operationId")
        if not op_id:
            problems.append(Problem("operation-id", where, "has no operationId"))
        elif op_id in seen:
            problems.append(
                Problem(
                    "operation-id-unique",
                    f"{where}.operationId",
                    f'"{op_id}" is also the operationId of {seen[op_id]}',
                )
            )
        else:
            seen[str(op_id)] = where
        params = [*_list(item.get("parameters")), *_list(operation.get("parameters"))]
        takes_input = bool(operation.get("requestBody")) or any(
            isinstance(p, dict) and ("$ref" in p or p.get("in") == "path" or p.get("required"))
            for p in params
        )
        responses = operation.get("responses")
        codes = [str(c).upper() for c in responses] if isinstance(responses, dict) else []
        if takes_input and not any(c.startswith("4") for c in codes):
            problems.append(
                Problem(
                    "error-response",
                    f"{where}.responses",
                    "takes a path or required parameter or a body but documents no 4xx "
                    "response "
                    "(e.g. 400, 404, 422; `default` does not count)",
                )
            )
    return problems


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
