"""``buildkit dev up | down | status``: the embedded stack (Tansu, Postgres, schema registry)."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from buildkit.cli.common import handle_errors, load_settings, out

app = typer.Typer(
    help="Run the embedded dev stack: Kafka (Tansu), Postgres + pgvector, the schema registry. "
    "No Docker, no JVM; state under BAR_DATA_DIR (default .bar).",
    no_args_is_help=True,
)


@app.command()
@handle_errors
def up() -> None:
    """Start every part of the stack that is not running yet, and wait until each answers.

    Idempotent: parts already running are left alone. Ports are checked before
    anything starts; if a part fails, what this command started is stopped again.
    A setting pointing off this machine (e.g. BAR_BOOTSTRAP_SERVERS=kafka.prod:9092)
    makes that part external: it is only checked, never started.

    Example: buildkit dev up

    On other ports: BAR_BOOTSTRAP_SERVERS=127.0.0.1:19092 buildkit dev up
    """
    from buildkit.dev.stack import Stack, stack_parts

    settings = load_settings()
    began = time.perf_counter()
    states = Stack(stack_parts(settings)).up()
    elapsed = time.perf_counter() - began
    for state in states:
        pid = f" (pid {state.pid})" if state.pid else ""
        out.print(
            f"[green]✓[/green] {state.part.name:<16} {escape(state.part.address)}  "
            f"{state.outcome}{pid}"
        )
    if all(state.outcome != "started" for state in states):
        out.print(f"the dev stack was already running — nothing started ({elapsed:.2f} s)")
    else:
        logs = escape(str(settings.data_dir / "logs"))
        out.print(
            f"dev stack up in {elapsed:.2f} s — logs in {logs}; stop it with: buildkit dev down"
        )


@app.command()
@handle_errors
def down() -> None:
    """Stop the processes `buildkit dev up` started (by their pid files); data is kept.

    Postgres is stopped with pg_ctl on its data directory; nothing is ever killed
    by process name. Running it when nothing runs is fine.

    Example: buildkit dev down
    """
    from buildkit.dev.stack import Stack, stack_parts

    settings = load_settings()
    states = Stack(stack_parts(settings)).down()
    stopped = [state for state in states if state.outcome == "stopped"]
    for state in stopped:
        out.print(f"stopped {state.part.name} (pid {state.pid})")
    if not stopped:
        run_dir = escape(str(settings.data_dir / "run"))
        out.print(f"nothing to stop — the dev stack is not running (no live pid in {run_dir})")
    else:
        data = escape(str(settings.data_dir / "postgres"))
        out.print(f"dev stack down; Postgres data kept in {data}")


@app.command()
@handle_errors
def status() -> None:
    """Show each part: address, pid, whether it runs and whether it answers.

    Exits 0 when every part answers, 1 otherwise — usable in scripts.

    Example: buildkit dev status || buildkit dev up
    """
    from buildkit.dev.stack import Stack, stack_parts

    states = Stack(stack_parts(load_settings())).status()
    table = Table("part", "pid", "running", "answering")
    table.add_column("address", overflow="fold")
    for state in states:
        running = "external" if state.outcome == "external" else _yes_no(state.pid is not None)
        table.add_row(
            state.part.name,
            str(state.pid or "-"),
            running,
            _yes_no(state.answering),
            escape(state.part.address),
        )
    out.print(table)
    silent = [state.part.name for state in states if not state.answering]
    if silent:
        out.print(f"not answering: {', '.join(silent)} — start the stack with: buildkit dev up")
        raise typer.Exit(1)
    out.print("all parts answer")


def _yes_no(value: bool) -> str:
    return "[green]yes[/green]" if value else "[red]no[/red]"
