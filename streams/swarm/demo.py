"""``buildkit swarm demo``: the architecture document's scaling example, live.

100 test-generation tasks, ``tasksPerAgent: 5``, ``minAgents: 2``, ``maxAgents: 20``
on the local backend (every replica a real process): SWARM scales to 20, each task
is answered exactly once, and SWARM scales back to 2 after the cool-down. The agent
is the sample worker of :mod:`agents.samples` (it spends ``work_s`` per task and
says so in its result): the point is the scaling, not the test generation.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agents.runtime.manifest import builtin_manifests_dir
from buildkit.settings import Settings
from streams.swarm.api import Swarm
from streams.swarm.controller import HealthSettings
from streams.swarm.policy import ScalingPolicy

__all__ = ["ScalingDemoReport", "run_scaling_demo"]

AGENT_TYPE = "demo-test-generator"


@dataclass
class ScalingDemoReport:
    """What the demo saw."""

    tasks: int
    distinct_results: int = 0
    duplicate_results: int = 0
    failed: int = 0
    peak_replicas: int = 0
    final_replicas: int = 0
    replicas_that_worked: int = 0
    seconds_to_peak: float | None = None
    seconds_to_all_done: float | None = None
    seconds_to_scaled_down: float | None = None
    timeline: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.distinct_results == self.tasks
            and self.duplicate_results == 0
            and self.failed == 0
            and self.final_replicas == self.policy_min
        )

    policy_min: int = 2


def _view(report: ScalingDemoReport, policy: ScalingPolicy, reason: str, lag: int | None) -> Table:
    table = Table.grid(padding=(0, 2))
    elapsed, replicas, done = report.timeline[-1] if report.timeline else (0.0, 0, 0)
    bar = "█" * replicas + "·" * (policy.max_replicas - replicas)
    table.add_row("time", f"{elapsed:5.1f} s")
    table.add_row(
        "replicas", f"{bar} {replicas:>2} (min {policy.min_replicas}, max {policy.max_replicas})"
    )
    table.add_row("lag", "-" if lag is None else str(lag))
    table.add_row("results", f"{done}/{report.tasks}")
    table.add_row("decision", reason[-110:])
    return table


def run_scaling_demo(
    settings: Settings,
    *,
    tasks: int = 100,
    work_s: float = 1.0,
    min_agents: int = 2,
    max_agents: int = 20,
    tasks_per_agent: int = 5,
    scale_up_cooldown_s: float = 5.0,
    scale_down_cooldown_s: float = 10.0,
    console: Console | None = None,
    timeout_s: float = 300.0,
) -> ScalingDemoReport:
    """Run the example; the report says whether it held (``report.ok``)."""
    console = console or Console()
    policy = ScalingPolicy.model_validate(
        {
            "minAgents": min_agents,
            "maxAgents": max_agents,
            "tasksPerAgent": tasks_per_agent,
            "scaleUpCooldown": scale_up_cooldown_s,
            "scaleDownCooldown": scale_down_cooldown_s,
            "stabilizationWindow": scale_down_cooldown_s,
        }
    )
    report = ScalingDemoReport(tasks=tasks, policy_min=min_agents)
    health = HealthSettings(health_check_interval_s=2.0, failure_threshold=5, startup_grace_s=90)
    with Swarm(settings, interval_s=0.5, health=health, heartbeat_interval_s=1.0) as swarm:
        agent = swarm.spawn_agent(
            builtin_manifests_dir() / "test-generator.yaml",
            entrypoint="agents.samples:SleepyAgent",
            name=AGENT_TYPE,
            scaling=policy,
        )
        console.print(
            f"deployed {agent}: {min_agents} replica processes (sample worker, "
            f"{work_s:g} s per task); policy minAgents {min_agents}, maxAgents {max_agents}, "
            f"tasksPerAgent {tasks_per_agent}"
        )
        files = [f"src/api/resource_{n:03d}.ts" for n in range(tasks)]
        started = time.monotonic()
        ids = swarm.create_tasks(agent, [{"file": f, "sleep_s": work_s} for f in files])
        console.print(f"created {len(ids)} test-generation tasks on bar.tasks.{agent}")
        deadline = started + timeout_s
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while time.monotonic() < deadline:
                answered = swarm.poll_results(ids, timeout_s=0.3)
                replicas = swarm.replicas(agent)
                elapsed = time.monotonic() - started
                report.timeline.append((elapsed, replicas, len(answered)))
                if replicas > report.peak_replicas:
                    report.peak_replicas = replicas
                    report.seconds_to_peak = elapsed
                if len(answered) == tasks and report.seconds_to_all_done is None:
                    report.seconds_to_all_done = elapsed
                last = swarm.controller.decisions[-1] if swarm.controller.decisions else None
                live.update(
                    _view(
                        report,
                        policy,
                        last.reason if last else "",
                        last.observation.lag if last else None,
                    )
                )
                if report.seconds_to_all_done is not None and replicas == min_agents:
                    report.seconds_to_scaled_down = elapsed
                    break
        if not console.is_terminal:
            console.line()  # a live view written to a file or pipe ends mid-line
        answered = swarm.poll_results(ids, timeout_s=1.0)
        per_task = Counter({t: len(results) for t, results in answered.items()})
        report.distinct_results = len(per_task)
        report.duplicate_results = sum(n - 1 for n in per_task.values())
        every = [r for results in answered.values() for r in results]
        report.failed = sum(1 for r in every if r.status.value != "SUCCEEDED")
        report.replicas_that_worked = len({r.replica_id for r in every})
        report.final_replicas = swarm.replicas(agent)
    return report
