"""``buildkit qits build-api``: write a runnable FastAPI implementation of an OpenAPI spec.

A plain Typer command function; the ``qits`` command group mounts it. It prints
one line per operation (CRUD role or stub) and the command that serves the result;
with ``--json`` the :class:`~qits.apibuild.BuiltApi` report as JSON on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from buildkit.cli.common import console, handle_errors, out


@handle_errors
def build_api_command(
    spec: Annotated[Path, typer.Option("--spec", help="OpenAPI 3.0/3.1 file (YAML or JSON)")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="directory to write app.py, models.py, ... into")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Build a FastAPI app from SPEC into OUT (CRUD over in-memory stores, stubs elsewhere).

    Serve it with: python -m uvicorn app:app --app-dir OUT --port 8000
    """
    from qits.apibuild import build_api

    built = build_api(spec, out_dir)
    if as_json:
        typer.echo(built.model_dump_json(indent=2))
        return
    out.print(escape(built.summary()), markup=True)
    crud = sum(1 for op in built.operations if op.kind not in ("stub", "unsupported"))
    left_out = sum(1 for op in built.operations if op.kind == "unsupported")
    console.print(
        f"{len(built.operations)} operations: {crud} CRUD, "
        f"{len(built.operations) - crud - left_out} stub, {left_out} left out; "
        f"files in {out_dir}",
        markup=False,
    )
    console.print(f"run: python -m uvicorn app:app --app-dir {out_dir} --port 8000", markup=False)
