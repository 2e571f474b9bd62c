"""The logic of ``buildkit schemas check``: file-based checks of the event contracts.

For every ``schemas/*.avsc``:

1. it parses (JSON, then fastavro and the ``avro`` package);
2. its registered pydantic model maps to the same schema (``doc`` ignored);
3. it is BACKWARD_TRANSITIVE compatible: the current schema, as reader, can read
   data written with every version recorded in ``schemas/history/<stem>/``;
4. it equals the latest recorded version — a change not yet recorded is
   reported, and ``record=True`` writes it as the next ``v<N>.avsc``.

Step 3 reuses the registry server's :func:`buildkit.registry.compat.check_compatibility`
(the ``avro`` package's checker, worded per field), so ``buildkit schemas check``
and the registry refuse exactly the same changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import avro.schema
import fastavro
from pydantic import BaseModel

from buildkit.contracts.avro_model import model_avro_schema
from buildkit.contracts.base import event_types
from buildkit.registry.compat import CompatibilityLevel, check_compatibility
from schemas import HISTORY_DIR, SCHEMA_DIR

Check = Literal["parse", "model", "compatibility", "history"]
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")
_RECORD_HINT = "record it: buildkit schemas check --record"
_FIELD_PREFIX = re.compile(r'field "([^"]+)": ')


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one schema file, printable as ``file: field "x": reason``."""

    file: str
    message: str
    field: str | None = None
    check: Check = "parse"

    def __str__(self) -> str:
        where = f'field "{self.field}": ' if self.field else ""
        return f"{self.file}: {where}{self.message}"


@dataclass
class SchemaReport:
    """What the check found for one ``.avsc`` file."""

    path: Path
    display: str
    schema: dict[str, Any] | None = None
    model: type[BaseModel] | None = None
    versions: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    recorded: Path | None = None


@dataclass
class CheckResult:
    """The outcome of :func:`check_schemas` over a schema directory."""

    reports: list[SchemaReport]
    orphans: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Every problem found, file by file."""
        return [p for r in self.reports for p in r.problems] + self.orphans

    @property
    def recorded(self) -> list[Path]:
        """History files written by ``record=True``."""
        return [r.recorded for r in self.reports if r.recorded is not None]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


# -- model against schema -----------------------------------------------------------


def model_differences(
    model: type[BaseModel], schema: dict[str, Any]
) -> list[tuple[str | None, str]]:
    """``(field path, what differs)`` between ``model`` and its ``.avsc``; docs ignored."""
    out: list[tuple[str | None, str]] = []
    _diff_type(_strip_docs(model_avro_schema(model)), _strip_docs(schema), "", out)
    return out


def _strip_docs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_docs(v) for k, v in value.items() if k != "doc"}
    if isinstance(value, list):
        return [_strip_docs(v) for v in value]
    return value


def _diff_type(m: Any, f: Any, path: str, out: list[tuple[str | None, str]]) -> None:
    where = path or None
    if _is(m, "record") and _is(f, "record"):
        for key in ("name", "namespace", "aliases"):
            if m.get(key) != f.get(key):
                out.append((where, f"record {key}: model {m.get(key)!r}, schema {f.get(key)!r}"))
        _diff_fields(m["fields"], f["fields"], path, out)
    elif _is(m, "enum") and _is(f, "enum") and m.get("name") == f.get("name"):
        for key in sorted(m.keys() | f.keys()):
            if m.get(key) != f.get(key):
                what = (
                    f"enum {m['name']} {key}: model {_dump(m.get(key))}, schema {_dump(f.get(key))}"
                )
                out.append((where, what))
    elif isinstance(m, list) and isinstance(f, list) and len(m) == len(f):
        for mb, fb in zip(m, f, strict=True):
            _diff_type(mb, fb, path, out)
    elif _is(m, "array") and _is(f, "array") and m.keys() == f.keys():
        _diff_type(m["items"], f["items"], path, out)
    elif _is(m, "map") and _is(f, "map") and m.keys() == f.keys():
        _diff_type(m["values"], f["values"], path, out)
    elif m != f:
        out.append((where, f"type differs: model {_dump(m)}, schema {_dump(f)}"))


def _diff_fields(
    m: list[dict[str, Any]], f: list[dict[str, Any]], path: str, out: list[Any]
) -> None:
    prefix = f"{path}." if path else ""
    m_by, f_by = {x["name"]: x for x in m}, {x["name"]: x for x in f}
    for name in m_by.keys() - f_by.keys():
        out.append((prefix + name, "in the model but not in the schema"))
    for name in f_by.keys() - m_by.keys():
        out.append((prefix + name, "in the schema but not in the model"))
    for name in [n for n in m_by if n in f_by]:
        mf, ff = m_by[name], f_by[name]
        _diff_type(mf["type"], ff["type"], prefix + name, out)
        if not _same_value(mf.get("default", _MISSING), ff.get("default", _MISSING)):
            out.append((prefix + name, f"default: model {_show(mf)}, schema {_show(ff)}"))
        for key in sorted((mf.keys() | ff.keys()) - {"name", "type", "default"}):
            if mf.get(key) != ff.get(key):
                out.append((prefix + name, f"{key}: model {mf.get(key)!r}, schema {ff.get(key)!r}"))
    common = [n for n in m_by if n in f_by]
    if common != [n for n in f_by if n in m_by]:
        order = [n for n in f_by if n in m_by]
        out.append((path or None, f"fields in a different order: model {common}, schema {order}"))


_MISSING = object()


def _same_value(a: Any, b: Any) -> bool:
    # JSON 1 and true are different defaults even though Python says 1 == True.
    return bool(a == b and isinstance(a, bool) == isinstance(b, bool))


def _show(f: dict[str, Any]) -> str:
    return _dump(f["default"]) if "default" in f else "no default"


def _is(value: Any, kind: str) -> bool:
    return isinstance(value, dict) and value.get("type") == kind


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- files ---------------------------------------------------------------------


def history_versions(history_dir: Path, stem: str) -> list[Path]:
    """The recorded versions of a contract, oldest first (``v1.avsc``, ``v2.avsc``, …)."""
    folder = history_dir / stem
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _VERSION_FILE.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found)]


def models_by_file(models: Iterable[type[BaseModel]] | None = None) -> dict[str, type[BaseModel]]:
    """Event models keyed by their ``schema_file`` (all registered event types by default)."""
    if models is None:
        # Registering happens when the models are defined: make sure they are.
        import buildkit.contracts.events  # noqa: F401

        models = event_types().values()
    return {m.schema_file: m for m in models}  # type: ignore[attr-defined]


def check_schemas(
    schema_dir: Path = SCHEMA_DIR,
    history_dir: Path = HISTORY_DIR,
    *,
    models: Mapping[str, type[BaseModel]] | None = None,
    record: bool = False,
) -> CheckResult:
    """Check every ``schema_dir/*.avsc``; with ``record``, write unrecorded versions.

    ``models`` maps a file name to its model (default: the registered event
    types). A version is recorded only when its file has no other problem.
    """
    models = models_by_file() if models is None else models
    base = schema_dir.parent
    reports = [
        _check_file(path, base, history_dir, models.get(path.name), record)
        for path in sorted(schema_dir.glob("*.avsc"))
    ]
    orphans = []
    present = {r.path.name for r in reports}
    for name, model in sorted(models.items()):
        if name not in present:
            orphans.append(
                Problem(
                    _display(schema_dir / name, base),
                    f"missing, but model {model.__name__} names it as its schema_file",
                    check="model",
                )
            )
    if history_dir.is_dir():
        for folder in sorted(p for p in history_dir.iterdir() if p.is_dir()):
            if f"{folder.name}.avsc" not in present and history_versions(history_dir, folder.name):
                orphans.append(
                    Problem(
                        _display(schema_dir / f"{folder.name}.avsc", base),
                        f"removed, but {_display(folder, base)}/ records earlier versions — data "
                        "written with them may still be on topics; restore the contract",
                        check="history",
                    )
                )
    return CheckResult(reports, orphans)


def _check_file(
    path: Path, base: Path, history_dir: Path, model: type[BaseModel] | None, record: bool
) -> SchemaReport:
    display = _display(path, base)
    report = SchemaReport(
        path, display, model=model, versions=history_versions(history_dir, path.stem)
    )
    schema, error = parse_schema_file(path)
    if schema is None:
        report.problems.append(Problem(display, error, check="parse"))
        return report
    report.schema = schema

    if model is None:
        report.problems.append(
            Problem(
                display,
                "no registered event model uses this schema (schema_file + @register)",
                check="model",
            )
        )
    else:
        for fname, what in model_differences(model, schema):
            report.problems.append(
                Problem(display, f"model {model.__name__} disagrees — {what}", fname, "model")
            )

    report.problems.extend(_compatibility_problems(schema, report.versions, display, base))

    latest = report.versions[-1] if report.versions else None
    latest_schema = parse_schema_file(latest)[0] if latest is not None else None
    if latest_schema == schema:
        return report
    if record and not report.problems:
        target = history_dir / path.stem / f"v{len(report.versions) + 1}.avsc"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        report.versions.append(target)
        report.recorded = target
        return report
    if latest is None:
        state = f"has no recorded version in {_display(history_dir / path.stem, base)}/"
    else:
        state = f"differs from the latest recorded version {_display(latest, base)}"
    todo = "not recorded: fix the problems above first" if record else _RECORD_HINT
    report.problems.append(Problem(display, f"{state} — {todo}", check="history"))
    return report


def _compatibility_problems(
    schema: dict[str, Any], versions: list[Path], display: str, base: Path
) -> list[Problem]:
    problems, old_texts, labels = [], [], []
    for old_path in versions:
        old, error = parse_schema_file(old_path)
        if old is None:
            problems.append(Problem(_display(old_path, base), error, check="parse"))
            continue
        old_texts.append(json.dumps(old))
        labels.append(_display(old_path, base))
    # The registry server's explainer: Avro's verdict, worded per field.
    for message in check_compatibility(
        json.dumps(schema), old_texts, CompatibilityLevel.BACKWARD_TRANSITIVE, labels=labels
    ):
        named = _FIELD_PREFIX.match(message)
        fname, message = (named.group(1), message[named.end() :]) if named else (None, message)
        problems.append(Problem(display, message, fname, "compatibility"))
    return problems


def parse_schema_file(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The schema in ``path`` and ``""``, or ``None`` and why it does not parse."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}"
    except json.JSONDecodeError as exc:
        return None, f"line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None, 'not an Avro record schema (expected a JSON object with "type": "record")'
    try:
        fastavro.parse_schema(schema)
        avro.schema.parse(json.dumps(schema))
    except Exception as exc:  # fastavro and avro raise a dozen unrelated types
        return None, f"not a valid Avro schema: {exc}"
    return schema, ""


def _display(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
