"""``buildkit gitlab actions`` and ``buildkit gitlab sink``: the outbox, seen and run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from buildkit.cli.common import handle_errors, load_settings, out
from buildkit.contracts.events import ActionKind, GitLabAction
from connectors.gitlab.actions_view import ViewStatus

__all__ = ["gitlab_app"]

gitlab_app = typer.Typer(
    help="GitLab: the actions agents asked for, and the sink that executes them.",
    no_args_is_help=True,
)

_COLOUR = {
    ViewStatus.PENDING: "yellow",
    ViewStatus.DONE: "green",
    ViewStatus.ALREADY_DONE: "green",
    ViewStatus.FAILED: "red",
}


def _target(action: GitLabAction) -> str:
    """``#iid`` for an issue, ``!iid`` for a merge request, else the sha or the page."""
    if action.target_iid is not None:
        on_mr = action.kind == ActionKind.MERGE_REQUEST_NOTE or action.target == "merge_request"
        return f"{'!' if on_mr else '#'}{action.target_iid}"
    return (action.sha or "")[:8] or action.title or "-"


@gitlab_app.command("actions")
@handle_errors
def actions(
    run: Annotated[str | None, typer.Option("--run", help="Only this ROE run's actions.")] = None,
    project: Annotated[
        int | None, typer.Option("--project", help="Only this GitLab project id.")
    ] = None,
    status: Annotated[
        ViewStatus | None, typer.Option("--status", help="Only actions in this state.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per action.")] = False,
) -> None:
    """The actions on `bar.gitlab.actions` with their outcomes from
    `bar.gitlab.action-outcomes`: pending (no outcome yet: no sink ran, or GitLab is not
    configured), done, already-done (found done on a redelivery) or failed, with why.

    Example: buildkit gitlab actions --run run-42 --status failed
    """
    from connectors.gitlab.actions_view import list_actions

    settings = load_settings()
    rows = list_actions(settings, run_id=run, project_id=project, status=status)
    if as_json:
        for row in rows:
            out.print(json.dumps(row.as_json()), markup=False)
        return
    table = Table("action", "kind", "project", "target", "run", "status", "http", "detail")
    for row in rows:
        action, outcome = row.action, row.outcome
        detail = "-"
        if outcome is not None:
            detail = outcome.reason or (f"ref {outcome.reference}" if outcome.reference else "-")
        table.add_row(
            escape(action.action_id),
            action.kind.value,
            str(action.project_id),
            escape(_target(action)),
            escape(action.run_id or "-"),
            f"[{_COLOUR[row.status]}]{row.status.value}[/]",
            str(outcome.http_status) if outcome and outcome.http_status else "-",
            escape(detail),
        )
    out.print(table)
    counts = {s: sum(r.status == s for r in rows) for s in ViewStatus}
    out.print(", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "no actions")


@gitlab_app.command("sink")
@handle_errors
def sink() -> None:
    """Run the GitLab sink in the foreground until Ctrl-C / SIGTERM: executes each action
    on `bar.gitlab.actions` with python-gitlab and records its outcome. Needs
    BAR_GITLAB_URL and BAR_GITLAB_TOKEN.

    Example: BAR_GITLAB_URL=https://gitlab.example.com BAR_GITLAB_TOKEN=glpat-xyz \
             buildkit gitlab sink
    """
    import logging

    from connectors.gitlab.sink import run_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stats = run_sink(load_settings())
    out.print(
        f"GitLab sink stopped: {stats.done} done, {stats.already_done} already done, "
        f"{stats.failed} failed"
    )
