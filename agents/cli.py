"""``buildkit agents``: list and describe manifests, scaffold a new agent, deploy one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from buildkit.cli.common import handle_errors, load_settings, out

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


@app.command("create")
@handle_errors
def create(
    agent_type: Annotated[
        str, typer.Option("--type", help="Agent type: governor, worker, critic or observer.")
    ],
    name: Annotated[str, typer.Option("--name", help="Agent name, lowercase kebab-case.")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to create the NAME folder (default: here)."),
    ] = None,
    capabilities: Annotated[
        list[str] | None,
        typer.Option("--capability", help="A capability for the manifest; repeat for more."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the generated files of an existing folder.")
    ] = False,
) -> None:
    """Scaffold a working agent in DIR/NAME: manifest, code, tests and a README.

    Example: buildkit agents create --type worker --name word-counter --capability text-stats
    """
    from rich.markup import escape

    from agents.scaffold import create_agent

    scaffold = create_agent(name, agent_type, directory, capabilities or [], force=force)
    agent = scaffold.names.name
    shown = escape(_shown(scaffold.folder))
    out.print(f"created {scaffold.manifest.type} agent [bold]{agent}[/bold] in {shown}/")
    for file_name in scaffold.files:
        out.print(f"  {shown}/{file_name}")
    parent = _shown(scaffold.folder.parent)
    out.print("next:" if parent == "." else f"next, from {escape(parent)}:")
    out.print(f"  python -m pytest {agent}        # its tests")
    out.print(
        f"  python -m agents.runtime.serve --manifest {agent}/manifest.yaml   # run it locally"
    )
    out.print(f"  buildkit agents deploy --agent-id {agent} --manifest {agent}/manifest.yaml")


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


@app.command("deploy")
@handle_errors
def deploy(
    agent_id: Annotated[str, typer.Option("--agent-id", help="The agent's name.")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest file (default: the shipped one of the agent)."),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", help="Run exactly N replicas (default: SWARM's policy)."),
    ] = None,
) -> None:
    """Validate a manifest, create the agent's task topic and ask SWARM to run it.

    Publishes a DEPLOY SwarmCommand on bar.swarm.commands and waits for the broker's ack.

    Example: buildkit agents deploy --agent-id word-counter --manifest word-counter/manifest.yaml
    """
    from agents.deploy import SWARM_COMMANDS_TOPIC, deploy_agent

    settings = load_settings()
    done = deploy_agent(settings, agent_id, manifest, replicas)
    command = done.command
    topic = done.task_topic
    topic_state = {"created": "created", "unchanged": "exists"}.get(
        topic.kind, f"{topic.kind} updated: {topic.detail}"
    )
    how_many = (
        f"{command.replicas} replica(s)" if command.replicas else "replicas per SWARM's policy"
    )
    out.print(f"deploy of [bold]{command.agent_type}[/bold] requested: {how_many}")
    out.print(f"  manifest        {done.manifest_path}")
    out.print(f"  task topic      {topic.topic} ({topic_state})")
    out.print(f"  command         {command.command_id} on {SWARM_COMMANDS_TOPIC} (acknowledged)")
    out.print(
        "next: the SWARM controller (`buildkit swarm run`, started by `buildkit dev up`) "
        "starts the replicas; watch with `buildkit swarm health --all`"
    )
