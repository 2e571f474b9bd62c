"""``buildkit roe workflows``: record, list, execute, follow and cancel workflow runs.

A client of a running engine (``python -m streams.roe``), through
:class:`streams.roe.api.Roe`. Heavy imports happen inside the commands, so
``buildkit --help`` stays quick.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from buildkit.cli.common import console, handle_errors, load_settings, out

if TYPE_CHECKING:
    from streams.roe.api import Roe
    from streams.roe.state import RunState

app = typer.Typer(help="ROE, the Runtime Orchestration Engine: workflows of agent stages.")
workflows = typer.Typer(help="Workflow definitions and their runs.", no_args_is_help=True)
app.add_typer(workflows, name="workflows")

_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "INTERRUPTED": "yellow",
    "RUNNING": "cyan",
    "DISPATCHED": "cyan",
}


def _roe() -> Roe:
    from streams.roe.api import Roe

    return Roe(load_settings())


def _styled(status: str) -> str:
    style = _STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@workflows.command("create")
@handle_errors
def create(
    file: Annotated[Path, typer.Argument(help="The workflow YAML file.")],
) -> None:
    """Validate a workflow file and record it; print its id.

    Each problem prints as FILE:LINE:COLUMN: MESSAGE and the exit code is 1.

    Example: buildkit roe workflows create feature-workflow.yml
    """
    from streams.roe.errors import WorkflowSpecError

    try:
        spec = _roe().create_workflow(file)
    except WorkflowSpecError as exc:
        for line in str(exc).splitlines():
            console.print(escape(line))
        raise typer.Exit(1) from None
    out.print(spec.workflow_id)


@workflows.command("list")
@handle_errors
def list_() -> None:
    """List the known workflows: the built-in ones and those recorded with create.

    Example: buildkit roe workflows list
    """
    table = Table("stages", "inputs", "triggers", title="workflows")
    table.columns.insert(0, Column("workflow id", no_wrap=True))
    for spec in _roe().list_workflows():
        triggers = [t.event or f"cron {t.cron}" for t in spec.trigger]
        table.add_row(
            spec.workflow_id,
            " → ".join(s.name for s in spec.stages),
            ", ".join(i.name for i in spec.inputs) or "-",
            ", ".join(triggers) or "-",
        )
    out.print(table)


def _parse_inputs(pairs: list[str]) -> dict[str, str]:
    from buildkit.errors import BuildKitError

    inputs = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BuildKitError(f'--input "{pair}" is not NAME=VALUE (e.g. --input issueId=123)')
        inputs[name] = value
    return inputs


@workflows.command("execute")
@handle_errors
def execute(
    workflow_id: Annotated[str, typer.Option("--workflow-id", help="The workflow to run.")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="A workflow input NAME=VALUE; repeatable.")
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(help="Makes a retried request start one run (default: a fresh id)."),
    ] = None,
) -> None:
    """Start a run of a workflow; print its run id.

    Example: buildkit roe workflows execute --workflow-id cli-two-step@1.0.0 --input issueId=123
    """
    run_id = _roe().execute_workflow(workflow_id, _parse_inputs(inputs or []), request_id)
    out.print(run_id)


def _stage_table(state: RunState) -> Table:
    table = Table(
        "stage",
        "status",
        "attempt",
        Column("task id", no_wrap=True),
        "reason",
        title=f"run {state.run_id} of {state.workflow_id}: {_styled(state.status.value)}",
    )
    for name, stage in state.stages.items():
        table.add_row(
            name,
            _styled(stage.status.value),
            str(stage.attempt or "-"),
            stage.task_id or "-",
            escape(stage.reason or ""),
        )
    if state.reason:
        table.caption = escape(state.reason)
    return table


def _runs_table(runs: list[RunState], title: str) -> Table:
    table = Table(
        Column("run id", no_wrap=True), "workflow", "status", "started", "finished", title=title
    )
    for state in runs:
        table.add_row(
            state.run_id,
            state.workflow_id,
            _styled(state.status.value),
            _time(state.started_at_ms),
            _time(state.finished_at_ms),
        )
    return table


@workflows.command("status")
@handle_errors
def status(
    run_id: Annotated[str | None, typer.Option("--run-id", help="The run to show.")] = None,
    workflow_id: Annotated[
        str | None, typer.Option("--workflow-id", help="Show the latest runs of this workflow.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Redraw until the run ends (--run-id only).")
    ] = False,
    last: Annotated[int, typer.Option(help="How many runs --workflow-id shows.")] = 10,
    interval: Annotated[float, typer.Option(help="Seconds between --watch redraws.")] = 0.5,
) -> None:
    """Show a run's stages (status, attempt, task id), or the latest runs of a workflow.

    With --watch the table redraws until the run ends; the exit code is then 0 if it
    succeeded and 1 if it failed or was cancelled.

    Examples: buildkit roe workflows status --run-id run-1a2b3c --watch
              buildkit roe workflows status --workflow-id feature-development-workflow@0.1.0
    """
    from buildkit.errors import BuildKitError

    if (run_id is None) == (workflow_id is None):
        raise BuildKitError("give one of --run-id RUN_ID or --workflow-id WORKFLOW_ID")
    roe = _roe()
    if workflow_id is not None:
        if watch:
            raise BuildKitError("--watch follows one run: use --run-id")
        runs = roe.runs(workflow_id)[-last:]
        out.print(_runs_table(runs[::-1], f"latest runs of {workflow_id}"))
        if not runs:
            out.print(f"no runs of {workflow_id} on bar.roe.events")
        return
    assert run_id is not None
    if not watch:
        state = roe.status(run_id)
        if state is None:
            raise BuildKitError(f"no run {run_id} on bar.roe.events")
        out.print(_stage_table(state))
        return
    _watch(roe, run_id, interval)


def _watch(roe: Roe, run_id: str, interval: float) -> None:
    from rich.live import Live
    from rich.text import Text

    with Live(Text(f"waiting for run {run_id} …"), console=out, auto_refresh=False) as live:
        while True:
            state = roe.status(run_id)
            if state is not None:
                live.update(_stage_table(state), refresh=True)
                if state.done:
                    outcome = state.status.value
                    break
            time.sleep(interval)
    if outcome != "SUCCEEDED":
        raise typer.Exit(1)


@workflows.command("history")
@handle_errors
def history(run_id: Annotated[str, typer.Argument(help="The run.")]) -> None:
    """Print a run's event timeline: time, seq, kind, stage, attempt, reason.

    Example: buildkit roe workflows history run-1a2b3c
    """
    from buildkit.errors import BuildKitError

    events = _roe().history(run_id)
    if not events:
        raise BuildKitError(f"no run {run_id} on bar.roe.events")
    table = Table("time", "seq", "kind", "stage", "attempt", "reason", title=f"run {run_id}")
    for event in events:
        table.add_row(
            event.at.astimezone(UTC).isoformat(timespec="milliseconds"),
            str(event.seq),
            event.kind.value,
            event.stage or "",
            "" if event.attempt is None else str(event.attempt),
            escape(event.reason or ""),
        )
    out.print(table)


@workflows.command("cancel")
@handle_errors
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run to cancel.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the run's history.")] = "cancelled",
) -> None:
    """Cancel a running run: nothing more is dispatched, later results are ignored.

    Example: buildkit roe workflows cancel run-1a2b3c --reason "wrong branch"
    """
    from buildkit.errors import BuildKitError

    roe = _roe()
    state = roe.status(run_id)
    if state is None:
        raise BuildKitError(f"no run {run_id} on bar.roe.events")
    if state.done:
        raise BuildKitError(f"run {run_id} already ended: {state.status.value}")
    roe.cancel(run_id, reason)
    out.print(f"cancel requested for {run_id}")


@app.command("demo")
@handle_errors
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each workflow's runs.")] = 60,
) -> None:
    """Watch GitLab deliveries start workflows, stage by stage.

    Deliveries are POSTed over HTTP to the dev stack's webhook (buildkit dev up): an
    issue labelled `feature` starts the Feature Development Workflow (simulated
    agents), and two merge requests run Merge Request Governance with the real
    branch-policy and version-sync agents on a git repository the demo builds; one
    passes, one is refused. Exits 1 if a run does not end as expected.

    Example: buildkit roe demo
    """
    from streams.roe.demo import run_roe_demo

    if not run_roe_demo(load_settings(), out, timeout_s=timeout):
        raise typer.Exit(1)
