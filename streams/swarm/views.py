"""Read-side views of SWARM for the CLI: replica health and per-agent metrics.

Everything is computed from the event log, so it works from any machine that reaches
the broker, with or without a controller running: heartbeats
(``bar.agents.heartbeats``), registrations (``bar.agents.registry``), results
(``bar.tasks.results``), scaling decisions (``bar.swarm.decisions``) and replica events
(``bar.swarm.replicas``). Time windows are read with :class:`buildkit.replay.BrokerReplay`
(which filters by record time, since the embedded broker's offsets-for-times is unusable).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from buildkit.catalog import default_catalog
from buildkit.contracts.base import Event
from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentRegistration,
    AgentResult,
    ReplicaState,
    TaskStatus,
)
from buildkit.contracts.swarm import (
    ReplicaEvent,
    ReplicaEventKind,
    ScalingAction,
    ScalingDecisionEvent,
)
from buildkit.errors import BuildKitError
from buildkit.replay import OPEN, BrokerReplay, parse_bound
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings

__all__ = [
    "AgentMetrics",
    "ReplicaHealth",
    "agent_metrics",
    "read_events",
    "replica_health",
    "resolve_agent_types",
]

log = logging.getLogger(__name__)

AGENT_KINDS = ("governor", "worker", "critic", "observer")
#: A replica silent this many deadlines is *lost* (killed outside SWARM, its machine
#: gone): reported apart from the unhealthy ones, which SWARM is about to replace.
LOST_AFTER_DEADLINES = 10
#: Lifecycle events after which a replica id is gone (a new id replaces it).
_FAILED = (ReplicaEventKind.CRASHED, ReplicaEventKind.MEMORY_KILLED, ReplicaEventKind.UNHEALTHY)


def read_events(settings: Settings, topic: str, since: str) -> Iterator[tuple[datetime, Event]]:
    """``(record time, event)`` of every record on ``topic`` since ``since`` (``-1h``,
    an ISO time, an offset)."""
    serde = SerdeRegistry(settings, default_catalog()).for_topic(topic)
    replay = BrokerReplay(settings, topic, parse_bound(since), OPEN, idle_timeout_s=10)
    try:
        for record in replay.records():
            try:
                event = serde.decode(record.value)
            except Exception as exc:  # `buildkit consume` shows such records raw
                log.debug("%s offset %s: not decodable: %s", topic, record.offset, exc)
                continue
            yield datetime.fromtimestamp(record.timestamp_ms / 1000, UTC), event
    finally:
        replay.close()


@dataclass(frozen=True)
class ReplicaHealth:
    """One replica as its heartbeats, registration and lifecycle events show it."""

    agent_type: str
    replica_id: str
    status: str  # healthy | unhealthy | stopped | failed | lost
    state: str
    last_heartbeat_age_s: float
    in_flight: int
    backlog: int
    cpu_percent: float
    memory_bytes: int
    partitions: tuple[int, ...]
    note: str = ""


def replica_health(
    settings: Settings,
    *,
    agent_types: set[str] | None = None,
    deadline_s: float = 30.0,
    window: str = "-1h",
    include_stopped: bool = False,
) -> list[ReplicaHealth]:
    """Every replica seen in ``window``: unhealthy when its last heartbeat is older
    than ``deadline_s`` (failureThreshold x healthCheckInterval) and it did not stop
    cleanly; lost when that is older than ten deadlines; stopped, or failed (crashed,
    memory-killed, replaced) per its lifecycle events. Stopped, failed and lost
    replicas are left out unless ``include_stopped``."""
    latest: dict[str, AgentHeartbeat] = {}
    for _, event in read_events(settings, "bar.agents.heartbeats", window):
        if isinstance(event, AgentHeartbeat) and (
            agent_types is None or event.agent in agent_types
        ):
            known = latest.get(event.replica_id)
            if known is None or known.sent_at <= event.sent_at:
                latest[event.replica_id] = event
    active: dict[str, bool] = {}
    for _, event in read_events(settings, "bar.agents.registry", "0"):
        if isinstance(event, AgentRegistration):
            active[event.agent_id] = event.active  # the log's order: the latest wins
    last_lifecycle: dict[str, ReplicaEvent] = {}
    for _, event in read_events(settings, "bar.swarm.replicas", window):
        if isinstance(event, ReplicaEvent):
            last_lifecycle[event.replica_id] = event
    now = time.time()
    rows = []
    for replica_id, beat in sorted(latest.items(), key=lambda kv: (kv[1].agent, kv[0])):
        age = now - beat.sent_at.timestamp()
        lifecycle = last_lifecycle.get(replica_id)
        ended = lifecycle.kind if lifecycle is not None else None
        if ended in _FAILED:
            assert lifecycle is not None
            status, note = "failed", f"{lifecycle.kind.value}: {lifecycle.reason}"
        elif (
            beat.state == ReplicaState.DRAINING
            or active.get(replica_id) is False
            or ended == ReplicaEventKind.STOPPED
        ):
            status, note = "stopped", "stopped cleanly"
        elif age > LOST_AFTER_DEADLINES * deadline_s:
            status, note = "lost", f"no heartbeat for {age:.0f} s: gone without a trace"
        elif age > deadline_s:
            status, note = "unhealthy", f"no heartbeat for {age:.0f} s (> {deadline_s:g} s)"
        else:
            status, note = "healthy", ""
        if status in ("stopped", "failed", "lost") and not include_stopped:
            continue
        rows.append(
            ReplicaHealth(
                beat.agent,
                replica_id,
                status,
                beat.state.value,
                age,
                beat.in_flight,
                beat.backlog,
                beat.cpu_percent,
                beat.memory_bytes,
                tuple(beat.partitions),
                note,
            )
        )
    return rows


@dataclass
class AgentMetrics:
    """``swarm.getMetrics({agentType, period})`` for one agent type."""

    agent_type: str
    period: str
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    duration_p50_s: float | None = None
    duration_p95_s: float | None = None
    duration_max_s: float | None = None
    replicas_seen: int = 0
    replicas_now: int | None = None
    replicas_max: int | None = None
    cpu_mean_percent: float | None = None
    cpu_max_percent: float | None = None
    memory_mean_bytes: float | None = None
    memory_max_bytes: int | None = None
    scale_ups: int = 0
    scale_downs: int = 0
    last_reason: str | None = None
    replica_events: dict[str, int] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return self.tasks_succeeded + self.tasks_failed


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def agent_metrics(settings: Settings, agent_types: list[str], period: str) -> list[AgentMetrics]:
    """Tasks, durations, replicas, CPU/memory and scaling activity over ``period``
    (``1h``, ``15m``, ``1d``) for each of ``agent_types``."""
    since = period if period.startswith("-") else f"-{period}"
    parse_bound(since)  # a bad period fails before any reading
    wanted = set(agent_types)
    metrics = {name: AgentMetrics(name, period) for name in agent_types}
    durations: dict[str, list[float]] = {name: [] for name in agent_types}
    for _, event in read_events(settings, "bar.tasks.results", since):
        if isinstance(event, AgentResult) and event.agent in wanted:
            m = metrics[event.agent]
            if event.status == TaskStatus.SUCCEEDED:
                m.tasks_succeeded += 1
            else:
                m.tasks_failed += 1
            durations[event.agent].append((event.finished_at - event.started_at).total_seconds())
    cpu: dict[str, list[float]] = {name: [] for name in agent_types}
    memory: dict[str, list[int]] = {name: [] for name in agent_types}
    replicas: dict[str, set[str]] = {name: set() for name in agent_types}
    for _, event in read_events(settings, "bar.agents.heartbeats", since):
        if isinstance(event, AgentHeartbeat) and event.agent in wanted:
            cpu[event.agent].append(event.cpu_percent)
            memory[event.agent].append(event.memory_bytes)
            replicas[event.agent].add(event.replica_id)
    for _, event in read_events(settings, "bar.swarm.decisions", since):
        if isinstance(event, ScalingDecisionEvent) and event.agent_type in wanted:
            m = metrics[event.agent_type]
            m.scale_ups += event.action == ScalingAction.UP
            m.scale_downs += event.action == ScalingAction.DOWN
            m.replicas_now = event.desired_replicas
            m.replicas_max = max(m.replicas_max or 0, event.desired_replicas)
            m.last_reason = event.reason
    kinds: dict[str, Counter[str]] = {name: Counter() for name in agent_types}
    for _, event in read_events(settings, "bar.swarm.replicas", since):
        if isinstance(event, ReplicaEvent) and event.agent_type in wanted:
            kinds[event.agent_type][event.kind.value] += 1
    for name, m in metrics.items():
        d = sorted(durations[name])
        m.duration_p50_s = _percentile(d, 50)
        m.duration_p95_s = _percentile(d, 95)
        m.duration_max_s = d[-1] if d else None
        m.replicas_seen = len(replicas[name])
        if cpu[name]:
            m.cpu_mean_percent = statistics.fmean(cpu[name])
            m.cpu_max_percent = max(cpu[name])
        if memory[name]:
            m.memory_mean_bytes = statistics.fmean(memory[name])
            m.memory_max_bytes = max(memory[name])
        m.replica_events = dict(kinds[name])
    return list(metrics.values())


def resolve_agent_types(settings: Settings, agent_type: str) -> list[str]:
    """``agent_type`` as agent names: a name as is, or a kind (``worker``…) expanded to
    the agents of that kind (shipped manifests and registrations)."""
    kind = agent_type.lower()
    if kind not in AGENT_KINDS:
        return [agent_type]
    from agents.runtime.manifest import load_manifests

    names = {m.name for m in load_manifests() if m.type == kind}
    for _, event in read_events(settings, "bar.agents.registry", "0"):
        if isinstance(event, AgentRegistration) and event.kind.value.lower() == kind:
            names.add(event.name)
    if not names:
        raise BuildKitError(f"no agent of type {agent_type} is known")
    return sorted(names)
