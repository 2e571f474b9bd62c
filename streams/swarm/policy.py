"""The autoscaling policy: observation + history → a scaling decision with its reason.

Pure: no clock, no Kafka, no Kubernetes. The caller measures, calls
:func:`decide_scale`, applies the decision, and keeps the returned history
(``history.record(decision)``), one :class:`ScalingHistory` per agent type.

The formula (the Kubernetes HPA's, per metric, then combined)
--------------------------------------------------------------
``current`` is the replica count now; ``tolerance`` defaults to 0.1, as in HPA.

* CPU / memory (resource metrics, as in HPA's ``Utilization`` target)::

      usage   = mean(percent reported by each replica)
      ratio   = usage / target
      desired = current                      if |ratio - 1| <= tolerance
                ceil(current * usage / target) otherwise

  e.g. 4 replicas at 90 % with target 70 → ceil(4 * 90 / 70) = 6. The mean is
  taken over the replicas that reported; a metric no replica reported, or one
  measured while 0 replicas run, is ignored (the reason says so).

* Lag (HPA's external metric with an ``AverageValue`` target). Lag is a *total*
  over the consumer group (end offsets - committed offsets, summed over
  partitions), not a per-replica average, so the target per replica
  (``tasks_per_agent``) divides it directly::

      desired = current                            if current > 0 and
                                                   |lag / (tasks_per_agent * current) - 1|
                                                     <= tolerance
                ceil(lag / tasks_per_agent)        otherwise

  e.g. 100 tasks, 5 per agent → 20 replicas. Lag is a lower bound: the embedded
  broker's high watermark is the last batch's base offset + 1 (DESIGN.md), so the
  true backlog may be larger by up to one batch per partition. The policy scales on
  what it can see, so an undercount can only make it scale up later or ask for
  fewer replicas; the stabilization window and ``min_replicas`` bound that.

* Combined: the maximum over the metrics that gave a recommendation (HPA's rule:
  the metric asking for most replicas wins); with none, keep ``current``. With 0
  replicas and lag > 0 the recommendation is at least 1 (scale from zero: nobody
  else would consume the backlog). Then it is clamped to
  ``[min_replicas, max_replicas]`` → ``recommended``.

Then time, to avoid flapping:

* Scale up to ``recommended`` when it exceeds ``current`` and the last scale-up is
  at least ``scale_up_cooldown_s`` old.
* Scale down only to ``stabilized`` = the highest ``recommended`` seen over the
  last ``stabilization_window_s`` (this one included; HPA's downscale
  stabilization), only when that is below ``current``, and only when the last
  change in either direction is at least ``scale_down_cooldown_s`` old.
* A ``current`` outside ``[min_replicas, max_replicas]`` (the policy changed) is
  brought inside at once, cooldowns notwithstanding.

Because a scale-up records its own recommendation, a scale-down cannot follow it
within the stabilization window: in any window there is at most one change of
direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

Action = Literal["up", "down", "hold"]
MetricName = Literal["lag", "cpu", "memory"]
Percent = Annotated[float, Field(ge=0)]


class ScalingPolicy(BaseModel):
    """``swarm.configureScaling`` for one agent type, plus the lag target per replica.

    Accepts the architecture document's camelCase keys (``minReplicas``,
    ``maxReplicas``, ``targetCPU``, ``targetMemory``, ``scaleUpCooldown``,
    ``scaleDownCooldown``, ``tasksPerAgent``; the scaling example's ``minAgents`` /
    ``maxAgents`` too) as well as the field names. Cooldowns and the window are
    seconds. Targets are percent of the replica's request (CPU, memory) and tasks
    of lag per replica; at least one is required.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(
        default=1, ge=0, validation_alias=AliasChoices("minReplicas", "minAgents", "min_replicas")
    )
    max_replicas: int = Field(
        default=10, ge=1, validation_alias=AliasChoices("maxReplicas", "maxAgents", "max_replicas")
    )
    target_cpu: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("targetCPU", "target_cpu")
    )
    target_memory: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("targetMemory", "target_memory")
    )
    tasks_per_agent: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("tasksPerAgent", "tasks_per_agent")
    )
    scale_up_cooldown_s: float = Field(
        default=60.0, ge=0, validation_alias=AliasChoices("scaleUpCooldown", "scale_up_cooldown_s")
    )
    scale_down_cooldown_s: float = Field(
        default=300.0,
        ge=0,
        validation_alias=AliasChoices("scaleDownCooldown", "scale_down_cooldown_s"),
    )
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    stabilization_window_s: float = Field(
        default=300.0,
        ge=0,
        validation_alias=AliasChoices("stabilizationWindow", "stabilization_window_s"),
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is greater than maxReplicas "
                f"({self.max_replicas}) — make minReplicas <= maxReplicas"
            )
        if self.target_cpu is None and self.target_memory is None and self.tasks_per_agent is None:
            raise ValueError(
                "no scaling target — set at least one of targetCPU, targetMemory, tasksPerAgent"
            )
        return self

    def clamp(self, replicas: int) -> int:
        """``replicas`` brought inside ``[min_replicas, max_replicas]``."""
        return max(self.min_replicas, min(self.max_replicas, replicas))


class Observation(BaseModel):
    """What was measured for one agent type at ``at_ms`` (epoch milliseconds).

    ``lag`` is the consumer group's total lag (end offsets - committed offsets over
    all partitions), ``None`` when not measured. It is a **lower bound**: with the
    embedded broker the end offset (high watermark) can trail the last record by up
    to one batch per partition (DESIGN.md, broker facts). ``cpu_percent`` and
    ``memory_percent`` hold one value per replica that reported, as percent of its
    request; replicas that did not report are simply absent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_type: str = Field(min_length=1)
    current_replicas: int = Field(ge=0)
    lag: int | None = Field(default=None, ge=0)
    cpu_percent: tuple[Percent, ...] = ()
    memory_percent: tuple[Percent, ...] = ()
    at_ms: int = Field(ge=0)


class MetricRecommendation(BaseModel):
    """One metric's say: its value, its target, the replicas it asks for and why.

    ``replicas`` is ``None`` when the metric was ignored (no data); ``value`` is the
    total lag or the mean percent over the reporting replicas.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: MetricName
    value: float | None
    target: float
    replicas: int | None
    within_tolerance: bool = False
    note: str


class ScalingDecision(BaseModel):
    """The outcome of :func:`decide_scale`, with every input it used and the reason.

    ``recommended`` is the bounded metric recommendation at this instant,
    ``stabilized`` the highest one over the stabilization window; ``desired`` is what
    to run now. ``last_scale_up_ms`` / ``last_change_ms`` are the history the
    cooldowns were checked against.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: ScalingPolicy
    observation: Observation
    recommendations: tuple[MetricRecommendation, ...]
    recommended: int
    stabilized: int
    current: int
    desired: int
    action: Action
    reason: str
    last_scale_up_ms: int | None
    last_change_ms: int | None

    @property
    def at_ms(self) -> int:
        """When the observation behind this decision was made (epoch ms)."""
        return self.observation.at_ms

    def to_event_fields(self) -> dict[str, object]:
        """A flat, Avro-friendly record of the decision: inputs, policy, outcome, reason."""
        obs, pol = self.observation, self.policy
        return {
            "agent_type": obs.agent_type,
            "at_ms": obs.at_ms,
            "action": self.action,
            "current_replicas": self.current,
            "desired_replicas": self.desired,
            "recommended_replicas": self.recommended,
            "stabilized_replicas": self.stabilized,
            "reason": self.reason,
            "lag": obs.lag,
            "lag_is_lower_bound": True,
            "cpu_percent": list(obs.cpu_percent),
            "memory_percent": list(obs.memory_percent),
            "recommendations": [r.model_dump() for r in self.recommendations],
            "min_replicas": pol.min_replicas,
            "max_replicas": pol.max_replicas,
            "target_cpu": pol.target_cpu,
            "target_memory": pol.target_memory,
            "tasks_per_agent": pol.tasks_per_agent,
            "tolerance": pol.tolerance,
            "scale_up_cooldown_s": pol.scale_up_cooldown_s,
            "scale_down_cooldown_s": pol.scale_down_cooldown_s,
            "stabilization_window_s": pol.stabilization_window_s,
            "last_scale_up_ms": self.last_scale_up_ms,
            "last_change_ms": self.last_change_ms,
        }


@dataclass(frozen=True)
class ScalingHistory:
    """What the cooldowns and the stabilization window need to remember, per agent type.

    ``recommendations`` holds ``(at_ms, recommended)`` pairs still inside the
    stabilization window. :meth:`record` assumes the decision was applied.
    """

    recommendations: tuple[tuple[int, int], ...] = ()
    last_scale_up_ms: int | None = None
    last_change_ms: int | None = None

    def record(self, decision: ScalingDecision) -> ScalingHistory:
        """A new history with ``decision`` applied; entries older than the window dropped."""
        now = decision.at_ms
        oldest = now - _ms(decision.policy.stabilization_window_s)
        kept = tuple(p for p in self.recommendations if p[0] >= oldest)
        return ScalingHistory(
            recommendations=(*kept, (now, decision.recommended)),
            last_scale_up_ms=now if decision.action == "up" else self.last_scale_up_ms,
            last_change_ms=now if decision.action != "hold" else self.last_change_ms,
        )


def decide_scale(
    policy: ScalingPolicy, observation: Observation, history: ScalingHistory
) -> ScalingDecision:
    """How many replicas ``observation.agent_type`` should run now, and why (see module doc)."""
    current = observation.current_replicas
    now = observation.at_ms
    recs = _recommendations(policy, observation)
    parts = [r.note for r in recs]

    asked = [r.replicas for r in recs if r.replicas is not None]
    raw = max(asked) if asked else current
    head = f"max {raw}" if asked else f"no usable metric, keep {current}"
    if current == 0 and (observation.lag or 0) > 0 and raw < 1:
        raw = 1
        head += ", at least 1 for lag with 0 replicas"
    recommended = policy.clamp(raw)
    parts.append(
        f"{head}, clamped to [{policy.min_replicas}, {policy.max_replicas}] → {recommended}"
    )

    oldest = now - _ms(policy.stabilization_window_s)
    in_window = [r for at, r in history.recommendations if at >= oldest]
    stabilized = max([recommended, *in_window])

    desired, action = current, "hold"
    if recommended > current:
        since = _since_s(now, history.last_scale_up_ms)
        if since is None or since >= policy.scale_up_cooldown_s:
            desired, action = recommended, "up"
            parts.append(f"up from {current} to {recommended}")
        else:
            parts.append(
                f"scale-up to {recommended} held: last scale-up {_num(since)}s ago, "
                f"cooldown {_num(policy.scale_up_cooldown_s)}s"
            )
    elif stabilized < current:
        since = _since_s(now, history.last_change_ms)
        if since is None or since >= policy.scale_down_cooldown_s:
            desired, action = stabilized, "down"
            parts.append(
                f"down from {current} to {stabilized}, the highest recommendation "
                f"in the last {_num(policy.stabilization_window_s)}s"
            )
        else:
            parts.append(
                f"scale-down to {stabilized} held: last change {_num(since)}s ago, "
                f"cooldown {_num(policy.scale_down_cooldown_s)}s"
            )
    elif recommended < current:
        parts.append(
            f"scale-down held: recommendation {stabilized} within the last "
            f"{_num(policy.stabilization_window_s)}s"
        )
    else:
        parts.append(f"hold at {current}")

    bounded = policy.clamp(desired)
    if bounded != desired:
        parts.append(f"{desired} is outside the bounds, so {bounded}")
        desired = bounded
        action = "up" if desired > current else "down" if desired < current else "hold"

    return ScalingDecision(
        policy=policy,
        observation=observation,
        recommendations=tuple(recs),
        recommended=recommended,
        stabilized=stabilized,
        current=current,
        desired=desired,
        action=action,
        reason="; ".join(parts),
        last_scale_up_ms=history.last_scale_up_ms,
        last_change_ms=history.last_change_ms,
    )


def _recommendations(policy: ScalingPolicy, obs: Observation) -> list[MetricRecommendation]:
    recs: list[MetricRecommendation] = []
    if policy.tasks_per_agent is not None:
        recs.append(_lag(obs, policy.tasks_per_agent, policy.tolerance))
    if policy.target_cpu is not None:
        recs.append(_resource("cpu", obs.cpu_percent, obs, policy.target_cpu, policy.tolerance))
    if policy.target_memory is not None:
        recs.append(
            _resource("memory", obs.memory_percent, obs, policy.target_memory, policy.tolerance)
        )
    return recs


def _lag(obs: Observation, per_agent: int, tolerance: float) -> MetricRecommendation:
    current, lag = obs.current_replicas, obs.lag
    if lag is None:
        return MetricRecommendation(
            metric="lag", value=None, target=per_agent, replicas=None, note="lag: not measured"
        )
    head = f"lag {lag} / {per_agent} per agent"
    if current > 0 and abs(lag / (per_agent * current) - 1) <= tolerance:
        return MetricRecommendation(
            metric="lag",
            value=lag,
            target=per_agent,
            replicas=current,
            within_tolerance=True,
            note=f"{head} within {_num(tolerance * 100)}% of {current} replicas → {current}",
        )
    wanted = _ceil(lag / per_agent)
    return MetricRecommendation(
        metric="lag", value=lag, target=per_agent, replicas=wanted, note=f"{head} → {wanted}"
    )


def _resource(
    metric: MetricName, percents: Sequence[float], obs: Observation, target: float, tol: float
) -> MetricRecommendation:
    current = obs.current_replicas
    if not percents or current == 0:
        why = "no replica reported" if not percents else "0 replicas running"
        return MetricRecommendation(
            metric=metric, value=None, target=target, replicas=None, note=f"{metric}: {why}"
        )
    usage = sum(percents) / len(percents)
    head = f"{metric} {_num(usage)}% of target {_num(target)}%"
    if abs(usage / target - 1) <= tol:
        return MetricRecommendation(
            metric=metric,
            value=usage,
            target=target,
            replicas=current,
            within_tolerance=True,
            note=f"{head} within {_num(tol * 100)}% → {current}",
        )
    wanted = _ceil(current * usage / target)
    return MetricRecommendation(
        metric=metric, value=usage, target=target, replicas=wanted, note=f"{head} → {wanted}"
    )


def _ceil(x: float) -> int:
    # Round first so float noise (4 * 70 / 70 = 4.000000000000001) does not add a replica.
    return math.ceil(round(x, 9))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _since_s(now_ms: int, then_ms: int | None) -> float | None:
    return None if then_ms is None else (now_ms - then_ms) / 1000


def _num(x: float) -> str:
    return f"{round(x, 2):g}"
