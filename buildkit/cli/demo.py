"""``buildkit demo``: the event backbone end to end on the embedded stack."""

from __future__ import annotations

from typing import Annotated

import typer

from buildkit.cli.common import handle_errors, load_settings, out


@handle_errors
def demo(
    runs: Annotated[int, typer.Option(min=1, max=1000, help="Workflow runs to simulate.")] = 30,
    no_stack: Annotated[
        bool, typer.Option("--no-stack", help="Use running services from BAR_* instead of dev up.")
    ] = False,
) -> None:
    """Stack up, topics, schemas, a few hundred realistic events produced, consumed,
    replayed by time window from the broker and from the audit archive, chains verified.

    Exits non-zero if any check fails. The stack keeps running: `buildkit dev down` stops it.

    Example: buildkit demo
    """
    from buildkit.demo import run_demo

    report = run_demo(load_settings(), out, start_stack=not no_stack, runs=runs)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        out.print(f"[red]demo failed:[/red] {failed}")
        raise typer.Exit(1)
    out.print(
        "[green]demo passed[/green] — every check held. Stop the stack with: buildkit dev down"
    )
