"""``buildkit schemas``: list, check and register the Avro event contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from buildkit.cli.common import console, handle_errors, load_settings, out
from buildkit.contracts.base import NAMESPACE
from buildkit.errors import ConfigError, RegistryUnavailable

app = typer.Typer(
    help="The Avro event contracts in schemas/: list, check, register.", no_args_is_help=True
)


@app.command("list")
@handle_errors
def list_schemas() -> None:
    """List the contracts: file, record, fields, recorded versions, registry id."""
    from buildkit.contracts.compat_check import history_versions, models_by_file, parse_schema_file
    from buildkit.contracts.registration import default_subjects, lookup_ids
    from buildkit.serde import call_registry, registry_client
    from schemas import HISTORY_DIR, SCHEMA_DIR

    settings = load_settings()
    url = settings.schema_registry_url
    models = models_by_file()
    subject_of = {m.schema_file: subject for subject, m in default_subjects().items()}

    rows = []
    to_look_up: dict[str, str] = {}
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        schema, error = parse_schema_file(path)
        versions = history_versions(HISTORY_DIR, path.stem)
        record = _record_name(schema) if schema else error
        fields = str(len(schema["fields"])) if schema else "?"
        subject = subject_of.get(path.name) if path.name in models else None
        if schema is not None and subject is not None:
            to_look_up[subject] = json.dumps(schema, separators=(",", ":"))
        rows.append((path.name, record, fields, len(versions), subject))

    ids: dict[str, int | None] | None
    try:
        client = registry_client(settings)
        call_registry(url, client.get_subjects)
        ids = lookup_ids(client, to_look_up, registry_url=url)
    except RegistryUnavailable:
        ids = None

    title = f"{len(rows)} contracts in schemas/ (namespace {NAMESPACE}), registry {url}"
    table = Table(title=title, title_justify="left")
    for column in ("file", "record", "fields", "history", "registry id"):
        table.add_column(
            column,
            justify="right" if column in ("fields", "history") else "left",
            # File names stay whole (other columns give way): a user greps this output.
            no_wrap=column == "file",
            min_width=len("agent_registration.avsc") if column == "file" else None,
        )
    for file, record, fields, n_versions, subject in rows:
        if ids is None:
            registered = "unreachable"
        elif subject is None or ids.get(subject) is None:
            registered = "—"
        else:
            registered = str(ids[subject])
        history = f"v1..v{n_versions}" if n_versions > 1 else ("v1" if n_versions else "none")
        table.add_row(file, record, fields, history, registered)
    out.print(table)
    if ids is None:
        console.print(f"schema registry {url} is unreachable: ids not shown", markup=False)


def _record_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if namespace in (None, NAMESPACE) or "." in name else f"{namespace}.{name}"


@app.command()
@handle_errors
def check(
    record: Annotated[
        bool,
        typer.Option(
            "--record", help="Write each compatible, changed schema as the next history version."
        ),
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="The .avsc directory (its history/ inside); default: this project's schemas/.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """Check every contract: parses, matches its model, BACKWARD_TRANSITIVE with its history."""
    from buildkit.contracts.compat_check import check_schemas
    from schemas import SCHEMA_DIR

    schema_dir = (directory or SCHEMA_DIR).resolve()
    result = check_schemas(schema_dir, schema_dir / "history", record=record)
    for path in result.recorded:
        out.print(f"recorded {path.relative_to(schema_dir.parent).as_posix()}", markup=False)
    for problem in result.problems:
        out.print(str(problem), markup=False)
    if result.problems:
        files = len({p.file for p in result.problems})
        out.print(f"{len(result.problems)} problem(s) in {files} schema file(s)", markup=False)
        raise typer.Exit(1)
    versions = sum(len(r.versions) for r in result.reports)
    out.print(
        f"{len(result.reports)} schemas OK: each parses, matches its model and reads data "
        f"written with all {versions} recorded versions (BACKWARD_TRANSITIVE)",
        markup=False,
    )


@app.command()
@handle_errors
def register(
    subject: Annotated[
        str | None, typer.Option("--subject", help="Register one schema under this subject.")
    ] = None,
    schema: Annotated[
        Path | None, typer.Option("--schema", help="The .avsc file to register under --subject.")
    ] = None,
) -> None:
    """Register the contracts with the schema registry (or one --schema under --subject)."""
    from buildkit.contracts.compat_check import parse_schema_file
    from buildkit.contracts.registration import (
        default_subjects,
        register_contracts,
        register_schema,
    )
    from buildkit.serde import registry_client

    if (subject is None) != (schema is None):
        raise ConfigError("give both --subject SUBJECT and --schema FILE, or neither")
    settings = load_settings()
    url = settings.schema_registry_url
    client = registry_client(settings)
    if subject is not None and schema is not None:
        parsed, error = parse_schema_file(schema)
        if parsed is None:
            raise ConfigError(f"{schema}: {error}")
        text = json.dumps(parsed, separators=(",", ":"))
        ids = {subject: register_schema(client, subject, text, registry_url=url)}
    else:
        ids = register_contracts(client, default_subjects(), registry_url=url)
    for name, schema_id in ids.items():
        out.print(f"{name}  id {schema_id}", markup=False)
    out.print(f"registered {len(ids)} subject(s) with {url}", markup=False)
