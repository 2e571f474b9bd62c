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
