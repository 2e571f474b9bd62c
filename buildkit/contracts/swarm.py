"""SWARM's contract: every scaling decision as an event on ``bar.swarm.decisions``, keyed by
agent type, with every input the policy used and the reason in words."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from buildkit.contracts.base import Event, register


class ScalingAction(StrEnum):
    """What the autoscaler decided."""

    UP = "UP"
    DOWN = "DOWN"
    HOLD = "HOLD"


class ScalingMetric(StrEnum):
    """The inputs a scaling decision weighs."""

    LAG = "LAG"
    CPU = "CPU"
    MEMORY = "MEMORY"


class MetricRecommendation(BaseModel):
    """One metric's say: its value, target, the replicas it asks for (None: no data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: ScalingMetric
    value: float | None = None
    target: float
    replicas: int | None = None
    within_tolerance: bool = False
    note: str = ""


@register
class ScalingDecisionEvent(Event):
    """A scaling decision for one agent type: inputs, policy, outcome and reason."""

    schema_file = "scaling_decision.avsc"

    agent_type: str
    at: datetime
    action: ScalingAction
    current_replicas: int
    desired_replicas: int
    recommended_replicas: int
    stabilized_replicas: int
    reason: str
    lag: int | None = None
    lag_is_lower_bound: bool = True
    cpu_percent: list[float] = []
    memory_percent: list[float] = []
    recommendations: list[MetricRecommendation] = []
    min_replicas: int
    max_replicas: int
    target_cpu: float | None = None
    target_memory: float | None = None
    tasks_per_agent: int | None = None
    tolerance: float
    scale_up_cooldown_s: float
    scale_down_cooldown_s: float
    stabilization_window_s: float
    last_scale_up: datetime | None = None
    last_change: datetime | None = None


class ReplicaEventKind(StrEnum):
    """What happened to one replica, as its backend saw it."""

    STARTED = "STARTED"
    STOPPED = "STOPPED"
    CRASHED = "CRASHED"
    MEMORY_KILLED = "MEMORY_KILLED"
    UNHEALTHY = "UNHEALTHY"


@register
class ReplicaEvent(Event):
    """A replica's life on ``bar.swarm.replicas``, keyed by agent type: started, stopped,
    crashed (exit code), killed for exceeding its memory limit, found unhealthy."""

    schema_file = "replica_event.avsc"

    event_id: str
    agent_type: str
    replica_id: str
    kind: ReplicaEventKind
    at: datetime
    backend: str
    pid: int | None = None
    exit_code: int | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    restarts: int = 0
    reason: str = ""


class SwarmCommandKind(StrEnum):
    """What an operator asks SWARM to do."""

    DEPLOY = "DEPLOY"
    SCALE = "SCALE"
    UNDEPLOY = "UNDEPLOY"


@register
class SwarmCommand(Event):
    """An operator's request on ``bar.swarm.commands``, keyed by agent type: deploy an
    agent (manifest + entry point), scale it to a fixed count, or undeploy it. The
    controller folds them from the start of the topic, so the deployed set survives it."""

    schema_file = "swarm_command.avsc"

    command_id: str
    kind: SwarmCommandKind
    agent_type: str
    replicas: int | None = None
    manifest_path: str | None = None
    policy_json: str | None = None
    requested_by: str
    at: datetime
