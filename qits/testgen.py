"""Generate pytest modules from an OpenAPI 3.0/3.1 document, to run against a live API.

``generate_tests(spec, out_dir)`` writes ``conftest.py`` plus one
``test_<resource>.py`` per resource (resources: see :mod:`qits.openapi`) and
returns a :class:`GeneratedTests` with the files and a per-operation report.
The generated code imports only pytest, httpx and jsonschema, and embeds every
response schema it checks (bundled, JSON Schema draft 2020-12), so it needs
no spec file at run time.

The rules the generated tests follow — an implementation passes them exactly
when it does what these rules say (the API builder reads this):

Running
  * The API is at pytest option ``--base-url``, else env ``BAR_QITS_BASE_URL``
    (the ``base_url_env`` argument), else the default given at generation
    (``http://127.0.0.1:8000``). Redirects are not followed.
  * Credentials come from env: ``BAR_QITS_TOKEN`` (http bearer, oauth2,
    openIdConnect → ``Authorization: Bearer``), ``BAR_QITS_API_KEY`` (apiKey
    schemes, in their header/query/cookie), ``BAR_QITS_USERNAME`` and
    ``BAR_QITS_PASSWORD`` (http basic). A test whose operation requires
    security and for which no alternative of its ``security`` can be met from
    env is *skipped* with the variable to set. ``[]`` or an alternative ``{}``
    means no credentials are needed.

Request values
  * Path, required query, required header and required cookie parameters:
    the parameter's ``example`` (or first ``examples`` value), else a value
    synthesized from its schema (:mod:`qits.openapi_schema`). Optional ones
    are not sent.
  * Request body: the first JSON media type (``application/json``, ``*/json``,
    ``*+json``), else ``application/x-www-form-urlencoded``; a value
    synthesized from the schema with required *and* optional properties,
    leaving out ``readOnly`` ones. Sent only when a supported media type exists.
  * CRUD: for an operation on an *item path* ``/things/{id}`` (last segment a
    parameter) whose *collection* ``/things`` has a POST, the test first
    creates an item with a synthesized POST body, expects a 2xx, and takes the
    id from the JSON response's ``id`` field, else the field named like the
    path parameter (``petId``). Nested items (``/a/{aId}/b/{bId}``) create their
    parents the same way. Without such a POST, the synthesized value is used.

Tests per operation (``<op>`` is the operationId, or method and path, as an identifier)
  a) ``test_<op>_succeeds``: a valid request. Status must be one of the
     documented 2xx codes (or in a documented ``2XX``); with none documented,
     one of the documented 3xx; with neither, any 2xx. If that code documents
     JSON content the body must parse as JSON and validate against its schema.
  b) ``test_<op>_not_found``: when the path has a parameter and ``404`` is
     documented explicitly (``default`` or ``4XX`` alone do not count). The
     last path parameter becomes a value that cannot exist — integer
     ``999999999``, uuid ``ffffffff-ffff-4fff-bfff-ffffffffffff``, other strings
     ``does-not-exist-qits`` (enum-typed or bounded parameters are reported
     instead); earlier parameters are created/synthesized as in (a). Status
     must be exactly 404.
  c) ``test_<op>_rejects_non_numeric_<param>``: for each path parameter of type
     integer or number, the value ``invalid``; status must be 400 or 422.
  d) ``test_<op>_rejects_body_without_required_field[<field>]``: for a JSON
     object body, one case per required, non-``readOnly`` top-level property:
     the valid body without that property; status must be 400 <= s < 500.
  e) ``test_<op>_requires_credentials``: when the operation requires security
     (no ``{}`` alternative) and documents ``401``: the request without any
     credentials; status must be exactly 401.
  In (b) to (e), when the status answered has JSON content documented under that
  exact code (or its ``4XX`` range), the body must validate against it;
  ``default`` is never used for validation. Other documented codes (409, 500,
  3xx…) are listed in the report as "not provoked"; no test asserts them.
  With LLM enrichment on (see :mod:`qits.llm`) two more tests may appear:
  ``test_<op>_accepts_suggested_body`` (bodies the LLM proposed that validate
  against the request schema; expects what (a) expects) and
  ``test_<op>_rejects_suggested_invalid_body`` (bodies that fail the schema;
  expects 400 <= s < 500). LLM output is checked with jsonschema before use.

Determinism: paths sorted, methods in specification order, values chosen by
fixed rules, no timestamps; the same document gives byte-identical files
(without LLM enrichment, whose suggestions are the model's).

Reported, not generated (per operation, never an exception): callbacks,
webhooks, request bodies with no JSON or form media type (the success test is
not generated when such a body is required), query parameters that are
objects, unresolvable ``$ref``s, string ``pattern``s (a value is still sent),
responses with non-JSON media types (not validated).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qits.llm import LlmCall, LlmEnricher
from qits.openapi import Operation, Spec, identifier, load_spec, resource_names
from qits.openapi_schema import SchemaTools
from qits.testgen_plan import OperationPlan, Planner
from qits.testgen_render import render_conftest, render_module


class OperationReport(BaseModel):
    """What was generated for one operation and what was not, with reasons."""

    model_config = ConfigDict(frozen=True)

    operation: str
    method: str
    path: str
    resource: str
    tests: list[str] = Field(default_factory=list)
    not_provoked: list[str] = Field(default_factory=list)
    unsupported: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class GeneratedFile(BaseModel):
    """One generated file, its path relative to the output directory."""

    model_config = ConfigDict(frozen=True)

    path: str
    content: str


class GeneratedTests(BaseModel):
    """The result of :func:`generate_tests`: files plus the per-operation report."""

    model_config = ConfigDict(frozen=True)

    title: str
    openapi_version: str
    files: list[GeneratedFile]
    operations: list[OperationReport]
    llm_calls: list[LlmCall] = Field(default_factory=list)
    out_dir: str | None = None

    @property
    def unsupported(self) -> dict[str, list[str]]:
        """Operation label → what could not be handled, for operations with any."""
        return {op.operation: op.unsupported for op in self.operations if op.unsupported}

    def write(self, out_dir: Path) -> list[Path]:
        """Write the files under ``out_dir`` (created if needed); return their paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for file in self.files:
            target = out_dir / file.path
            target.write_text(file.content, encoding="utf-8")
            written.append(target)
        return written


DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def generate_tests(
    spec: str | Path | Mapping[str, Any],
    out_dir: Path | None = None,
    *,
    base_url_env: str = "BAR_QITS_BASE_URL",
    default_base_url: str = DEFAULT_BASE_URL,
    llm: LlmEnricher | None = None,
) -> GeneratedTests:
    """Generate the test modules for ``spec`` (path, JSON/YAML text or parsed dict).

    Writes them under ``out_dir`` when given. Raises
    :class:`~qits.errors.SpecError` only when the document is not
    readable OpenAPI 3.x; everything narrower is in the returned report.
    """
    loaded = load_spec(spec)
    plans, reports = _plan_all(loaded)
    calls: list[LlmCall] = []
    if llm is not None:
        for plan in plans:
            calls += llm.enrich(plan)
    resources = sorted({plan.resource for plan in plans})
    files = [
        GeneratedFile(
            path="conftest.py", content=render_conftest(loaded, base_url_env, default_base_url)
        )
    ]
    for resource in resources:
        members = [p for p in plans if p.resource == resource]
        files.append(
            GeneratedFile(
                path=f"test_{resource}.py", content=render_module(loaded, resource, members)
            )
        )
    final_reports = [_final_report(r, plans) for r in reports]
    result = GeneratedTests(
        title=loaded.title,
        openapi_version=loaded.version,
        files=files,
        operations=final_reports,
        llm_calls=calls,
        out_dir=str(out_dir) if out_dir is not None else None,
    )
    if out_dir is not None:
        result.write(out_dir)
    return result


def _plan_all(spec: Spec) -> tuple[list[OperationPlan], list[OperationReport]]:
    operations = spec.operations()
    names = resource_names(sorted({op.path for op in operations}))
    planner = Planner(spec, SchemaTools(spec), operations)
    plans: list[OperationPlan] = []
    reports: list[OperationReport] = []
    used: set[str] = set()
    for op in operations:
        slug = _unique(_slug(op), used)
        try:
            plan = planner.plan(op, slug, names[op.path])
        except Exception as exc:  # a bad operation is reported, never a crash
            reports.append(
                OperationReport(
                    operation=op.label,
                    method=op.method.upper(),
                    path=op.path,
                    resource=names[op.path],
                    unsupported=[f"generation failed: {type(exc).__name__}: {exc}"],
                )
            )
            continue
        plans.append(plan)
        reports.append(
            OperationReport(
                operation=op.label,
                method=op.method.upper(),
                path=op.path,
                resource=plan.resource,
            )
        )
    for label, reason in spec.skipped:
        reports.append(
            OperationReport(operation=label, method="", path="", resource="", unsupported=[reason])
        )
    for name in spec.webhooks():
        reports.append(
            OperationReport(
                operation=f"webhook {name}",
                method="",
                path="",
                resource="",
                unsupported=["webhooks are requests the API sends; nothing to call, not tested"],
            )
        )
    return plans, reports


def _final_report(report: OperationReport, plans: list[OperationPlan]) -> OperationReport:
    plan = next((p for p in plans if p.label == report.operation and p.path == report.path), None)
    if plan is None:
        return report
    return report.model_copy(
        update={
            "tests": plan.test_names(),
            "not_provoked": plan.not_provoked(),
            "unsupported": list(plan.unsupported),
            "notes": list(plan.notes),
        }
    )


def _slug(op: Operation) -> str:
    if op.operation_id:
        return identifier(op.operation_id)
    return identifier(f"{op.method}_{op.path.replace('{', 'by_').replace('}', '')}")


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate
