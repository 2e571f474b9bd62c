"""The api-builder: a runnable FastAPI implementation of an OpenAPI 3.0/3.1 spec.

``build_api(spec, out_dir)`` writes a package the generated tests can run against:

- ``models.py``: pydantic v2 models by datamodel-code-generator (component schemas
  and inline request/response schemas); request bodies are validated with them,
  so a missing required field or a wrong type answers 422.
- ``app.py``: one route per operation with parameters typed from the spec (a
  wrong-typed path parameter answers 422). CRUD-shaped operations keep objects in
  an in-memory dict; the rest are stubs answering the first documented success
  with a body synthesized from its schema. The rules are in :mod:`qits.apibuild_plan`.
- ``_runtime.py``: the helpers the routes call (:mod:`qits.apibuild_runtime`, copied).
- ``build-report.json``: the per-operation report also returned as :class:`BuiltApi`.

Run the result with ``python -m uvicorn app:app --app-dir OUT --port 8000``.

Security: an operation whose (own or global) ``security`` names bearer/basic/http,
apiKey (header, query or cookie) or oauth2/openIdConnect answers 401 when the
credential is absent; any non-empty value is accepted. The same spec always
gives byte-identical files. A part of the spec the builder cannot handle is
reported against its operation (which is then left out), never raised.
"""

from __future__ import annotations

import json
import pprint
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from buildkit.errors import BuildKitError
from qits import apibuild_runtime
from qits.apibuild_plan import (
    OpPlan,
    Param,
    Resource,
    build_params,
    classify,
    documented_reply,
    find_resources,
    identifier,
    list_schema,
    paging,
    response_schema,
    security,
    shape,
    success,
)
from qits.apibuild_schema import BuildSpec, as_dict, json_media
from qits.openapi import HTTP_METHODS

OperationKind = Literal[
    "list", "create", "read", "replace", "update", "delete", "stub", "unsupported"
]


_COUNTS = ("total", "count", "totalcount", "total_count")


class ApiBuildError(BuildKitError):
    """The package could not be written (models failed to generate, or the directory)."""

    code = "qits.api_build_failed"
    retryable = False


class OperationReport(BaseModel):
    """How the built app implements one operation."""

    method: str
    path: str
    operation_id: str
    kind: OperationKind
    resource: str | None = None
    status: int | None = None
    notes: list[str] = []


class BuiltApi(BaseModel):
    """What :func:`build_api` wrote and how each operation is implemented."""

    out_dir: Path
    files: list[Path]
    title: str
    openapi: str
    operations: list[OperationReport]
    notes: list[str] = []

    def run_command(self, port: int = 8000) -> list[str]:
        """The command that serves the built app on ``port``."""
        return [
            sys.executable, "-m", "uvicorn", "app:app",
            "--app-dir", str(self.out_dir), "--port", str(port),
        ]  # fmt: skip

    def of(self, operation_id: str) -> OperationReport:
        """The report of one operation, by operationId."""
        return next(op for op in self.operations if op.operation_id == operation_id)

    def summary(self) -> str:
        """One line per operation, for the CLI."""
        lines = []
        for op in self.operations:
            what = op.kind if op.kind != "stub" else f"stub {op.status}"
            where = f" [{op.resource}]" if op.resource else ""
            notes = f" — {'; '.join(op.notes)}" if op.notes else ""
            lines.append(f"{op.method.upper():7} {op.path}  {what}{where}{notes}")
        return "\n".join(lines)


def build_api(spec: str | Path | Mapping[str, Any], out_dir: Path) -> BuiltApi:
    """Write a FastAPI implementation of ``spec`` into ``out_dir`` and report it."""
    doc = BuildSpec.load(spec)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApiBuildError(f'cannot create "{out_dir}": {exc} — pick a writable --out') from exc
    models_src, classes, notes = generate_models(doc.document)
    resources = find_resources(doc)
    plans, reports = _plan(doc, resources, classes)
    files = {
        "models.py": models_src,
        "_runtime.py": Path(apibuild_runtime.__file__).read_text(encoding="utf-8"),
        "app.py": render_app(doc, resources, plans),
        "build-report.json": "",
    }
    info = as_dict(doc.document.get("info"))
    built = BuiltApi(
        out_dir=out_dir,
        files=[out_dir / name for name in files],
        title=str(info.get("title", "API")),
        openapi=doc.declared,
        operations=reports,
        notes=notes,
    )
    files["build-report.json"] = built.model_dump_json(indent=2, exclude={"out_dir", "files"})
    for name, text in files.items():
        (out_dir / name).write_text(text + ("" if text.endswith("\n") else "\n"), "utf-8")
    return built


def generate_models(data: Mapping[str, Any]) -> tuple[str, dict[str, str], list[str]]:
    """``models.py`` source, the class generated for each schema (by JSON pointer), notes.

    When datamodel-code-generator cannot handle the spec, ``models.py`` is empty and
    the note says why; request bodies are then accepted unvalidated (each reported).
    """
    import tempfile

    import datamodel_code_generator as dcg
    from datamodel_code_generator.enums import OpenAPIScope
    from datamodel_code_generator.format import Formatter, PythonVersion

    with tempfile.TemporaryDirectory() as tmp:
        out, meta = Path(tmp) / "models.py", Path(tmp) / "meta.json"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcg.generate(
                    json.dumps(data),
                    input_file_type=dcg.InputFileType.OpenAPI,
                    output=out,
                    emit_model_metadata=meta,
                    openapi_scopes=[
                        OpenAPIScope.Schemas, OpenAPIScope.Paths, OpenAPIScope.RequestBodies
                    ],
                    # email-validator is not a dependency: emails are plain strings.
                    type_mappings=["email=string", "idn-email=string"],
                    formatters=[Formatter.BUILTIN],
                    target_python_version=PythonVersion.PY_311,
                    disable_timestamp=True,
                    use_double_quotes=True,
                )  # fmt: skip
        except Exception as exc:  # the generator raises many types; all mean "no models"
            note = f"datamodel-code-generator: {exc}"
            return "# no models: " + " ".join(note.split()) + "\n", {}, [note]
        source = out.read_text(encoding="utf-8") if out.exists() else ""
        classes: dict[str, str] = {}
        if meta.exists():
            for model in json.loads(meta.read_text(encoding="utf-8")).get("models", []):
                if not model.get("module"):
                    classes.setdefault(str(model["source_ref"]), str(model["class_name"]))
    return source or "# no schemas: no models\n", classes, []


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _plan(
    doc: BuildSpec, resources: dict[str, Resource], classes: dict[str, str]
) -> tuple[list[OpPlan], list[OperationReport]]:
    paths: dict[str, Any] = doc.document.get("paths") or {}
    plans: list[OpPlan] = []
    reports: list[OperationReport] = []
    funcs: set[str] = set()
    for path in sorted(paths, key=_route_order):
        item = paths[path] if isinstance(paths[path], dict) else {}
        for method in (m for m in HTTP_METHODS if isinstance(item.get(m), dict)):
            operation = item[method]
            op_id = str(operation.get("operationId") or f"{method} {path}")
            try:
                plan = _plan_one(doc, resources, classes, path, method, op_id, funcs)
            except Exception as exc:  # reported, never fatal: the rest of the API still builds
                reports.append(
                    OperationReport(
                        method=method, path=path, operation_id=op_id, kind="unsupported",
                        notes=[f"left out: {type(exc).__name__}: {exc}"],
                    )
                )  # fmt: skip
                continue
            plans.append(plan)
            reports.append(
                OperationReport(
                    method=method, path=path, operation_id=op_id, kind=plan.kind,
                    resource=plan.resource.collection if plan.resource else None,
                    status=plan.config["status"], notes=plan.notes,
                )
            )  # fmt: skip
    return plans, reports


def _route_order(path: str) -> tuple[tuple[int, str], ...]:
    """Literal segments before parameters, so ``/pets/mine`` is matched before ``/pets/{id}``."""
    return tuple((1 if s == "{}" else 0, s) for s in shape(path))


def _plan_one(
    doc: BuildSpec,
    resources: dict[str, Resource],
    classes: dict[str, str],
    path: str,
    method: str,
    op_id: str,
    funcs: set[str],
) -> OpPlan:
    operation = doc.document["paths"][path][method]
    kind, res = classify(doc, resources, path, method)
    taken: set[str] = set()
    params, route, notes = build_params(doc, path, operation, taken)
    plan = OpPlan(
        method=method, path=path, operation_id=op_id, func=identifier(op_id, funcs),
        kind=kind, resource=res, params=params, route_path=route, notes=notes,
    )  # fmt: skip
    path_params = [p.py_name for p in params if p.where == "path"]
    if kind in ("read", "replace", "update", "delete"):
        plan.ident, plan.parents = path_params[-1], path_params[:-1]
    else:
        plan.parents = path_params
    if kind == "list":
        plan.limit, plan.offset = paging(params)
    _plan_body(doc, classes, plan, operation)
    code = success(operation, kind)
    has_body, media, schema = response_schema(doc, operation, code)
    status = int(code) if code and code.isdigit() else 200
    echo = kind != "stub" and has_body and "json" in media
    config: dict[str, Any] = {"status": status, "has_body": has_body}
    if media != "application/json":
        config["media_type"] = media
    if echo and res is not None and res.entity is not None and kind != "list":
        echo = doc.same_schema(schema, res.entity) or _is_entity_ref(doc, schema, res)
    if kind == "list" and has_body:
        listing = list_schema(doc, operation)
        if listing is not None and listing[1] is not None:
            envelope = as_dict(doc.synthesize(schema))
            counts = [k for k, v in envelope.items() if isinstance(v, int) and k.lower() in _COUNTS]
            config["envelope"] = (listing[1], counts)
            config["body"] = envelope
    if not echo:
        config["echo"] = False
    if has_body and (not echo or kind == "stub"):
        config["body"] = doc.synthesize(schema or {})
    label = (res.name if res else path.strip("/").split("/")[-1] or "item").rstrip("s")
    missing = documented_reply(doc, operation, 404, f"{label} not found")
    if missing is not None:
        config["missing"] = missing
    invalid = next(
        (r for s in (422, 400) if (r := documented_reply(doc, operation, s, "invalid request"))),
        None,
    )
    responses = operation.get("responses") or {}
    if invalid is not None and ("422" in responses or "400" in responses or invalid[1]):
        config["invalid"] = invalid
    checks, sec_notes = security(doc, operation)
    plan.notes += sec_notes
    if checks:
        config["security"] = checks
        unauthorized = documented_reply(doc, operation, 401, "missing credentials")
        if unauthorized is not None:
            config["unauthorized"] = unauthorized
        plan.notes.append("401 without credentials; any non-empty value accepted")
    plan.parent = _parent(resources, path, res, kind, responses)
    if kind == "stub" and "404" in responses:
        known = {p.py_name: p.known for p in params if p.where == "path" and p.known}
        if known:
            plan.known = known
            plan.notes.append(f"404 unless {', '.join(known)} is a documented example")
    if kind == "stub" and code is None:
        plan.notes.append("no success response documented: answers 200 without a body")
    plan.config = config
    return plan


def _is_entity_ref(doc: BuildSpec, schema: Any, res: Resource) -> bool:
    resolved = doc.resolve(schema)
    return isinstance(resolved, dict) and resolved == doc.resolve(res.entity)


def _plan_body(doc: BuildSpec, classes: dict[str, str], plan: OpPlan, operation: dict) -> None:
    raw = operation.get("requestBody")
    if raw is None:
        return
    body = doc.resolve(raw)
    content = body.get("content") if isinstance(body, dict) else None
    media = json_media(content)
    plan.body_required = bool(isinstance(body, dict) and body.get("required"))
    if media is None:
        kinds = ", ".join(sorted(content or {})) or "no content"
        plan.notes.append(f"request body ({kinds}) is not validated")
        return
    schema = media[1].get("schema")
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        pointer = schema["$ref"]
    elif isinstance(raw, dict) and isinstance(raw.get("$ref"), str):
        pointer = f"{raw['$ref']}/content/{_pointer(media[0])[2:]}/schema"
    else:
        pointer = _pointer("paths", plan.path, plan.method, "requestBody", "content", media[0])
        pointer += "/schema"
    model = classes.get(pointer)
    if model is None:
        plan.body_model = "Any"
        if schema:
            plan.notes.append("request body has no generated model: accepted unvalidated")
    else:
        plan.body_model = f"models.{model}"


def _parent(
    resources: dict[str, Resource], path: str, res: Resource | None, kind: str, responses: dict
) -> tuple[str, int] | None:
    """(store, depth) of the stored item this operation hangs under, when it documents 404."""
    if "404" not in responses or kind in ("read", "replace", "update", "delete"):
        return None
    own = shape(path)
    best: Resource | None = None
    for other in resources.values():
        if other.item is None or (other is res and kind != "stub"):
            continue
        item = shape(other.item)
        deeper = best is None or len(item) > len(shape(best.item or ""))
        if len(item) < len(own) and own[: len(item)] == item and deeper:
            best = other
    if best is None or best.item is None:
        return None
    return best.name, sum(1 for s in shape(best.item) if s == "{}")


def _literal(value: Any, indent: int = 4) -> str:
    text = pprint.pformat(value, width=96 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def render_app(doc: BuildSpec, resources: dict[str, Resource], plans: list[OpPlan]) -> str:
    """The source of ``app.py``."""
    info = as_dict(doc.document.get("info"))
    title, version = str(info.get("title", "API")), str(info.get("version", "0"))
    crud = sum(1 for p in plans if p.kind != "stub")
    lines = [
        f'"""FastAPI implementation of {title!r} {version} (OpenAPI {doc.declared}),',
        "built by qits.apibuild (buildkit qits build-api); do not edit, rebuild.",
        "",
        f"{crud} operation(s) are CRUD over in-memory stores, {len(plans) - crud} are stubs;",
        "build-report.json says which. Run:",
        "",
        "    python -m uvicorn app:app --app-dir OUT --port 8000",
        "",
        "where OUT is the directory holding this file.",
        '"""',
        "",
        "from typing import Annotated, Any, Literal  # noqa: F401",
        "from uuid import UUID  # noqa: F401",
        "",
        "from fastapi import Body, Cookie, FastAPI, Header, Path, Query  # noqa: F401",
        "from fastapi.responses import Response",
        "",
        "import _runtime as rt",
        "import models  # noqa: F401",
        "",
        f"app = FastAPI(title={title!r}, version={version!r})",
        "",
        "STORES = {",
    ]
    for res in resources.values():
        lines.append(
            f"    {res.name!r}: rt.Store(id_field={res.id_field!r}, id_kind={res.id_kind!r}, "
            f"template={_literal(res.template, 8)}),"
        )
    lines += ["}", "", "OPS = {"]
    for plan in plans:
        args = []
        for key, value in plan.config.items():
            args.append(f"{key}={_literal(value, 8)}")
        if plan.parent is not None:
            args.append(f"parent=(STORES[{plan.parent[0]!r}], {plan.parent[1]})")
        lines.append(f"    {plan.func!r}: rt.Op({', '.join(args)}),")
    lines += ["}", "", "rt.install(app, OPS)", ""]
    for plan in plans:
        lines += ["", *_render_route(plan)]
    return "\n".join(lines) + "\n"


def _render_route(plan: OpPlan) -> list[str]:
    decorator = (
        f"@app.api_route({plan.route_path!r}, methods=[{plan.method.upper()!r}], "
        f"name={plan.func!r}, status_code={plan.config['status']}, "
        f"dependencies=rt.guard(OPS[{plan.func!r}]))"
    )
    args = [_render_param(p) for p in sorted(plan.params, key=lambda p: not p.required)]
    if plan.body_model is not None:
        if plan.body_required:
            args.append(f"payload: Annotated[{plan.body_model}, Body()]")
        else:
            args.append(f"payload: Annotated[{plan.body_model} | None, Body()] = None")
    signature = f"def {plan.func}(" + (f"*, {', '.join(args)}" if args else "") + ") -> Response:"
    parents = "(" + "".join(f"{p}, " for p in plan.parents).rstrip(" ") + ")"
    op = f"OPS[{plan.func!r}]"
    store = f"STORES[{plan.resource.name!r}]" if plan.resource else ""
    payload = "payload" if plan.body_model is not None else "None"
    call = {
        "list": f"rt.list_items({store}, {op}, {parents}, {plan.limit}, {plan.offset})",
        "create": f"rt.create({store}, {op}, {parents}, {payload})",
        "read": f"rt.read({store}, {op}, {parents}, {plan.ident})",
        "replace": f"rt.replace({store}, {op}, {parents}, {plan.ident}, {payload})",
        "update": f"rt.update({store}, {op}, {parents}, {plan.ident}, {payload})",
        "delete": f"rt.delete({store}, {op}, {parents}, {plan.ident})",
        "stub": f"rt.stub({op}, {parents}{_known_arg(plan)})",
    }[plan.kind]
    doc = f"{plan.method.upper()} {plan.path}: {plan.kind}"
    return [decorator, signature, f'    """{doc}."""', f"    return {call}", ""]


def _known_arg(plan: OpPlan) -> str:
    if not plan.known:
        return ""
    pairs = ", ".join(f"({name}, {values!r})" for name, values in plan.known.items())
    return f", known=[{pairs}]"


def _render_param(param: Param) -> str:
    marker = {"path": "Path", "query": "Query", "header": "Header", "cookie": "Cookie"}
    kwargs = [f"{k}={v!r}" for k, v in param.constraints.items()]
    if param.where != "path" and param.py_name != param.wire:
        kwargs.insert(0, f"alias={param.wire!r}")
    meta = f"{marker[param.where]}({', '.join(kwargs)})"
    if param.required:
        return f"{param.py_name}: Annotated[{param.type_src}, {meta}]"
    return f"{param.py_name}: Annotated[{param.type_src} | None, {meta}] = None"
