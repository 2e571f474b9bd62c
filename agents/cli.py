"""``buildkit agents``: the agent manifests (the SDK, scaffolding and deploy come next)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from buildkit.cli.common import handle_errors, out

app = typer.Typer(
    help="Agents: their manifests, task topics and consumer groups.", no_args_is_help=True
)


@app.command("list")
@handle_errors
def list_agents(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Manifests folder (default: the shipped ones).")
    ] = None,
) -> None:
    """Every agent manifest: name, type, capabilities, task topic and resources.

    Example: buildkit agents list
    """
    from agents.runtime.manifest import load_manifests

    table = Table("name", "type", "capabilities", "task topic", "cpu / memory (limits)")
    for manifest in load_manifests(directory):
        res = manifest.resources
        limits = f" ({res.limits.cpu} / {res.limits.memory})" if res.limits else ""
        table.add_row(
            manifest.name,
            manifest.type,
            ", ".join(manifest.capabilities),
            manifest.task_topic,
            f"{res.cpu} / {res.memory}{limits}",
        )
    out.print(table)


@app.command("describe")
@handle_errors
def describe(
    name: Annotated[str, typer.Argument(help="Agent name, e.g. tdd-enforcer.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Manifests folder (default: the shipped ones).")
    ] = None,
) -> None:
    """One agent's whole manifest, plus where it reads and writes on Kafka.

    Example: buildkit agents describe performance-monitor
    """
    import difflib

    from agents.runtime.manifest import load_manifests
    from buildkit.errors import BuildKitError

    manifests = {m.name: m for m in load_manifests(directory)}
    manifest = manifests.get(name)
    if manifest is None:
        close = difflib.get_close_matches(name, manifests, n=3)
        hint = f" — did you mean {', '.join(close)}?" if close else ""
        raise BuildKitError(f'no agent manifest named "{name}"{hint} (`buildkit agents list`)')
    out.print(f"[bold]{manifest.name}[/bold] ({manifest.type})")
    out.print(f"  task topic      {manifest.task_topic}")
    out.print(f"  consumer group  {manifest.group_id}")
    for field in ("capabilities", "rules", "dependencies", "integrations", "outputs"):
        values = getattr(manifest, field)
        if values:
            out.print(f"  {field:<15} {', '.join(values)}")
    for key, threshold in manifest.parsed_thresholds.items():
        out.print(f"  threshold       {key}: {threshold.value:g} {threshold.unit}")
    res = manifest.resources
    out.print(f"  resources       cpu {res.cpu}, memory {res.memory}")
    if res.limits:
        out.print(f"  limits          cpu {res.limits.cpu}, memory {res.limits.memory}")
