"""``buildkit swarm``: run the controller, see replica health and metrics, scale by hand."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from buildkit.cli.common import handle_errors, load_settings, out
from buildkit.errors import BuildKitError

app = typer.Typer(
    help="SWARM: autoscaling and health of the agents' consumer groups.", no_args_is_help=True
)


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


@app.command("run")
@handle_errors
def run(
    backend: Annotated[
        str, typer.Option(help="Where replicas run: local (processes) or kubernetes.")
    ] = "local",
    interval: Annotated[float, typer.Option(help="Seconds between scaling passes.")] = 2.0,
    health_interval: Annotated[
        float, typer.Option(help="healthCheckInterval: seconds between expected heartbeats.")
    ] = 10.0,
    failure_threshold: Annotated[
        int, typer.Option(help="failureThreshold: missed heartbeats before a replica is replaced.")
    ] = 3,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    kube_url: Annotated[
        str | None, typer.Option(help="Kubernetes API URL (default: kubeconfig / in-cluster).")
    ] = None,
) -> None:
    """Run the SWARM controller until Ctrl-C: follows `bar.swarm.commands` (agents deploy,
    swarm scale), scales every deployed agent on lag/CPU/memory, replaces unhealthy
    replicas, publishes decisions on `bar.swarm.decisions`.

    Example: buildkit swarm run --backend local --interval 2
    """
    from streams.swarm.controller import HealthSettings
    from streams.swarm.service import make_backend, run_service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    chosen = make_backend(
        settings,
        backend,
        heartbeat_interval_s=min(2.0, health_interval / 2),
        namespace=namespace,
        kube_url=kube_url,
    )
    out.print(f"SWARM controller running ({backend} backend); Ctrl-C stops it")
    run_service(
        settings,
        chosen,
        interval_s=interval,
        health=HealthSettings(health_interval, failure_threshold),
    )


@app.command("health")
@handle_errors
def health(
    all_: Annotated[bool, typer.Option("--all", help="Every agent type.")] = False,
    agent_type: Annotated[
        str | None, typer.Option(help="One agent (name) or a kind: governor, worker, ...")
    ] = None,
    failure_threshold: Annotated[int, typer.Option(help="Missed heartbeats tolerated.")] = 3,
    health_interval: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 10.0,
    window: Annotated[str, typer.Option(help="How far back to look for replicas.")] = "-1h",
    include_stopped: Annotated[
        bool,
        typer.Option("--include-stopped", help="Also list stopped, failed and lost replicas."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per replica.")] = False,
) -> None:
    """Every replica's health from its heartbeats: healthy, unhealthy (silent longer than
    failure-threshold x health-interval), and with --include-stopped also stopped,
    failed (crashed, memory-killed, replaced) and lost (silent ten times that long).
    Exits 1 when a replica is unhealthy, so it can serve as a probe.

    Example: buildkit swarm health --all
    """
    from streams.swarm.views import replica_health, resolve_agent_types

    if not all_ and agent_type is None:
        raise BuildKitError("say which replicas: --all or --agent-type NAME")
    settings = load_settings()
    types = None if all_ else set(resolve_agent_types(settings, agent_type or ""))
    rows = replica_health(
        settings,
        agent_types=types,
        deadline_s=failure_threshold * health_interval,
        window=window,
        include_stopped=include_stopped,
    )
    if as_json:
        for row in rows:
            out.print(json.dumps(asdict(row)), markup=False)
    else:
        table = Table(
            "agent",
            "replica",
            "health",
            "state",
            "last beat",
            "in flight",
            "backlog",
            "cpu %",
            "memory",
            "partitions",
            "note",
        )
        colour = {
            "healthy": "green",
            "unhealthy": "red",
            "stopped": "dim",
            "failed": "yellow",
            "lost": "dim",
        }
        for row in rows:
            table.add_row(
                row.agent_type,
                row.replica_id,
                f"[{colour[row.status]}]{row.status}[/]",
                row.state,
                f"{row.last_heartbeat_age_s:.1f} s ago",
                str(row.in_flight),
                str(row.backlog),
                f"{row.cpu_percent:.0f}",
                _bytes(row.memory_bytes),
                ",".join(map(str, row.partitions)) or "-",
                row.note,
            )
        out.print(table)
        counts = {s: sum(r.status == s for r in rows) for s in colour}
        out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no replicas seen")
    if any(row.status == "unhealthy" for row in rows):
        raise typer.Exit(1)


@app.command("scale")
@handle_errors
def scale(
    agent_type: Annotated[str, typer.Option(help="The deployed agent to scale.")],
    replicas: Annotated[int, typer.Option(min=0, help="How many replicas to run now.")],
) -> None:
    """Scale a deployed agent to N replicas now (a command on `bar.swarm.commands` that
    the controller applies). Autoscaling carries on from there within the agent's
    minReplicas..maxReplicas, as under a Kubernetes HPA.

    Example: buildkit swarm scale --agent-type test-generator --replicas 10
    """
    from agents.deploy import publish_swarm_command, swarm_command
    from buildkit.contracts.swarm import SwarmCommandKind

    settings = load_settings()
    command = swarm_command(SwarmCommandKind.SCALE, agent_type, replicas=replicas)
    publish_swarm_command(settings, command)
    out.print(
        f"asked SWARM to run {replicas} replica(s) of {agent_type} "
        f"(command {command.command_id}); watch: buildkit swarm health --agent-type {agent_type}"
    )


@app.command("metrics")
@handle_errors
def metrics(
    agent_type: Annotated[
        str, typer.Option(help="An agent name or a kind (governor, worker, critic, observer).")
    ],
    period: Annotated[str, typer.Option(help="How far back: 15m, 1h, 1d.")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """swarm.getMetrics: tasks done and failed, task duration p50/p95/max, replicas,
    CPU and memory from heartbeats, scale-ups/downs and replica events over the period.

    Example: buildkit swarm metrics --agent-type worker --period 1h
    """
    from streams.swarm.views import agent_metrics, resolve_agent_types

    settings = load_settings()
    rows = agent_metrics(settings, resolve_agent_types(settings, agent_type), period)
    if as_json:
        out.print(json.dumps([{**asdict(m), "tasks": m.tasks} for m in rows]), markup=False)
        return
    table = Table(
        "agent",
        "tasks ok",
        "failed",
        "p50 s",
        "p95 s",
        "replicas (seen / now / max)",
        "cpu % mean / max",
        "memory mean / max",
        "scale up / down",
        "replica events",
    )
    for m in rows:
        table.add_row(
            m.agent_type,
            str(m.tasks_succeeded),
            str(m.tasks_failed),
            _num(m.duration_p50_s, ".2f"),
            _num(m.duration_p95_s, ".2f"),
            f"{m.replicas_seen} / {_num(m.replicas_now, 'd')} / {_num(m.replicas_max, 'd')}",
            f"{_num(m.cpu_mean_percent, '.0f')} / {_num(m.cpu_max_percent, '.0f')}",
            f"{_bytes(m.memory_mean_bytes)} / {_bytes(m.memory_max_bytes)}",
            f"{m.scale_ups} / {m.scale_downs}",
            ", ".join(f"{k.lower()} {v}" for k, v in sorted(m.replica_events.items())) or "-",
        )
    out.print(table)
    for m in rows:
        if m.last_reason:
            out.print(f"{m.agent_type}: last decision: {m.last_reason}")


@app.command("demo")
@handle_errors
def demo(
    tasks: Annotated[int, typer.Option(min=1, help="How many test-generation tasks.")] = 100,
    work_s: Annotated[float, typer.Option(help="Seconds each task takes.")] = 1.0,
    scale_down_cooldown: Annotated[
        float, typer.Option(help="scaleDownCooldown (and stabilization window), seconds.")
    ] = 10.0,
) -> None:
    """The architecture document's scaling example on the local backend: 100 tasks,
    tasksPerAgent 5, minAgents 2, maxAgents 20 — SWARM scales to 20 replica processes,
    every task is answered once, then back to 2. Exits 1 if any of that does not hold.
    Needs the stack (`buildkit dev up`).

    Example: buildkit swarm demo
    """
    from streams.swarm.demo import run_scaling_demo

    settings = load_settings()
    report = run_scaling_demo(
        settings, tasks=tasks, work_s=work_s, scale_down_cooldown_s=scale_down_cooldown
    )

    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} s"

    mark = "[green]✓[/green]" if report.ok else "[red]✗[/red]"
    out.print(
        f"{mark} {report.distinct_results}/{report.tasks} tasks answered, "
        f"{report.duplicate_results} duplicate result(s), {report.failed} failed; "
        f"peak {report.peak_replicas} replicas after {secs(report.seconds_to_peak)}, "
        f"{report.replicas_that_worked} replicas did work, all done after "
        f"{secs(report.seconds_to_all_done)}, back to {report.final_replicas} after "
        f"{secs(report.seconds_to_scaled_down)}"
    )
    if not report.ok:
        raise typer.Exit(1)
