"""doc-sync: Markdown API documentation from the run's OpenAPI document, published to the wiki.

Reads ``openapi-spec.yaml`` (or the ``spec`` input) and writes ``docs/api.md``: the
API's title and description, an index of operations, then per operation its
parameters, request body, responses and the error codes it documents, and a table
of fields per component schema. Local ``$ref``s are shown as links to the schema's
section; nothing is fetched.

When the GitLab project is known (``gitlab.project_id``), a ``WIKI_PAGE`` action
publishes the same Markdown as the wiki page ``API: <title>`` (the sink creates it
or updates it, and does nothing when it is unchanged).

Metrics: ``operations``, ``schemas``, ``bytes``. Fault: ``qits.spec_invalid``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from agents.qits.base import QitsAgent, QitsPolicy
from agents.qits.inputs import QitsInput
from agents.qits.spec import operations, parse_spec
from agents.runtime.agent import ActionRequest, AgentFault, TaskOutcome
from buildkit.contracts.events import ActionKind
from qits.errors import SpecError

__all__ = ["DOCS_ARTIFACT", "DocSyncAgent", "DocSyncPolicy", "render_markdown"]

DOCS_ARTIFACT = "docs/api.md"


class DocSyncPolicy(QitsPolicy):
    """Where doc-sync publishes."""

    #: Publish to the GitLab wiki when the project is known.
    wiki: bool = True
    #: Title of the wiki page; ``{title}`` is the API's title.
    page_title: str = "API: {title}"


class DocSyncAgent(QitsAgent[DocSyncPolicy]):
    """Writes Markdown API docs from the spec and publishes them as a GitLab wiki page."""

    manifest_file: ClassVar[str] = "doc-sync"
    policy_model = DocSyncPolicy

    def run(self, inp: QitsInput, policy: DocSyncPolicy) -> TaskOutcome:
        """See the module docstring."""
        spec = self.spec_of(inp)
        try:
            if isinstance(spec, Path):
                doc = parse_spec(spec.read_text(encoding="utf-8"), str(spec))
            else:
                doc = parse_spec(spec, "the spec input")
        except SpecError as exc:
            raise AgentFault("qits.spec_invalid", str(exc)) from exc
        markdown = render_markdown(doc)
        out = self.output(inp, DOCS_ARTIFACT)
        out.write_text(markdown, encoding="utf-8")
        actions = []
        title = str(_dict(doc.get("info")).get("title") or "API")
        if policy.wiki and inp.project_id is not None:
            actions.append(
                ActionRequest(
                    kind=ActionKind.WIKI_PAGE,
                    project_id=inp.project_id,
                    title=policy.page_title.format(title=title),
                    body=markdown,
                )
            )
        return TaskOutcome(
            metrics={
                "operations": float(sum(1 for _ in operations(doc))),
                "schemas": float(len(_dict(_dict(doc.get("components")).get("schemas")))),
                "bytes": float(len(markdown.encode())),
            },
            outputs={DOCS_ARTIFACT: self.store.reference(out)},
            actions=actions,
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cell(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name.lower())


class _Doc:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def deref(self, value: Any, depth: int = 0) -> dict[str, Any]:
        """A local ``$ref`` followed (a few levels deep); anything else as a dict."""
        value = _dict(value)
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and depth < 10:
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = _dict(target).get(part.replace("~1", "/").replace("~0", "~"))
            return self.deref(target, depth + 1)
        return value

    def type_of(self, schema: Any) -> str:
        schema = _dict(schema)
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return f"[{name}](#{_anchor(name)})" if "/schemas/" in ref else f"`{name}`"
        for combo in ("oneOf", "anyOf", "allOf"):
            if isinstance(schema.get(combo), list):
                joined = " \\| " if combo != "allOf" else " & "
                return joined.join(self.type_of(s) for s in schema[combo])
        kind = schema.get("type", "any")
        if isinstance(kind, list):
            kind = " \\| ".join(str(k) for k in kind)
        if kind == "array":
            return f"array of {self.type_of(schema.get('items'))}"
        fmt = f" ({schema['format']})" if schema.get("format") else ""
        enum = (
            f" one of {', '.join(f'`{v}`' for v in schema['enum'])}" if schema.get("enum") else ""
        )
        return f"`{kind}`{fmt}{enum}"

    def media_schema(self, content: Any) -> tuple[str, Any] | None:
        for media, body in _dict(content).items():
            return media, _dict(body).get("schema")
        return None


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown documentation of OpenAPI document ``doc`` (see the module docstring)."""
    d = _Doc(doc)
    info = _dict(doc.get("info"))
    out = [f"# {info.get('title', 'API')} {info.get('version', '')}".rstrip(), ""]
    if info.get("description"):
        out += [str(info["description"]).strip(), ""]
    out += [f"OpenAPI {doc.get('openapi', '?')}. Generated by doc-sync; do not edit.", ""]
    servers = [str(_dict(s).get("url")) for s in doc.get("servers") or [] if _dict(s).get("url")]
    if servers:
        out += ["Servers: " + ", ".join(f"`{s}`" for s in servers), ""]
    ops = list(operations(doc))
    out += ["## Operations", "", "| Method | Path | Operation | Summary |", "|---|---|---|---|"]
    for path, method, op, _item in ops:
        out.append(
            f"| {method.upper()} | `{path}` | [{op.get('operationId', '')}](#op-"
            f"{_cell(op.get('operationId', method + path)).lower()}) | {_cell(op.get('summary'))} |"
        )
    out.append("")
    for path, method, op, item in ops:
        op_id = str(op.get("operationId", f"{method} {path}"))
        out += [f'<a id="op-{op_id.lower()}"></a>', f"### `{method.upper()} {path}` — {op_id}", ""]
        for key in ("summary", "description"):
            if op.get(key):
                out += [str(op[key]).strip(), ""]
        params = [
            d.deref(p) for p in [*(item.get("parameters") or []), *(op.get("parameters") or [])]
        ]
        if params:
            out += ["**Parameters**", "", "| Name | In | Type | Required | Description |",
                    "|---|---|---|---|---|"]  # fmt: skip
            for p in params:
                required = "yes" if p.get("required") or p.get("in") == "path" else "no"
                out.append(
                    f"| `{p.get('name')}` | {p.get('in')} | {d.type_of(p.get('schema'))} | "
                    f"{required} | {_cell(p.get('description'))} |"
                )
            out.append("")
        body = d.deref(op.get("requestBody"))
        found = d.media_schema(body.get("content")) if body else None
        if found:
            required = " (required)" if body.get("required") else ""
            out += [f"**Request body**{required}: `{found[0]}` {d.type_of(found[1])}", ""]
        responses = _dict(op.get("responses"))
        if responses:
            out += ["**Responses**", "", "| Status | Description | Body |", "|---|---|---|"]
            for code, response in responses.items():
                resolved = d.deref(response)
                media = d.media_schema(resolved.get("content"))
                shown = f"`{media[0]}` {d.type_of(media[1])}" if media else ""
                out.append(f"| {code} | {_cell(resolved.get('description'))} | {shown} |")
            out.append("")
            errors = [str(c) for c in responses if str(c)[:1] in ("4", "5")]
            if errors:
                out += [f"**Error codes**: {', '.join(errors)}", ""]
    schemas = _dict(_dict(doc.get("components")).get("schemas"))
    if schemas:
        out += ["## Schemas", ""]
    for name, schema in schemas.items():
        schema = _dict(schema)
        out += [f'<a id="{_anchor(name)}"></a>', f"### {name}", ""]
        if schema.get("description"):
            out += [str(schema["description"]).strip(), ""]
        props = _dict(schema.get("properties"))
        if not props:
            out += [f"Type: {d.type_of(schema)}", ""]
            continue
        mandatory = set(schema.get("required") or [])
        out += ["| Field | Type | Required | Description |", "|---|---|---|---|"]
        for field, prop in props.items():
            flags = " (read-only)" if _dict(prop).get("readOnly") else ""
            out.append(
                f"| `{field}` | {d.type_of(prop)}{flags} | {'yes' if field in mandatory else 'no'}"
                f" | {_cell(_dict(prop).get('description'))} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"
