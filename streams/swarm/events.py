"""A :class:`~streams.swarm.policy.ScalingDecision` as the event SWARM publishes on
``bar.swarm.decisions`` (contract: :class:`buildkit.contracts.swarm.ScalingDecisionEvent`)."""

from __future__ import annotations

from datetime import UTC, datetime

from buildkit.contracts.swarm import (
    MetricRecommendation,
    ScalingAction,
    ScalingDecisionEvent,
    ScalingMetric,
)
from streams.swarm.policy import ScalingDecision


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def decision_event(decision: ScalingDecision) -> ScalingDecisionEvent:
    """The event of ``decision``: every input, the policy, the outcome and the reason."""
    fields = decision.to_event_fields()
    recommendations = [
        MetricRecommendation(
            metric=ScalingMetric(r.metric.upper()),
            value=r.value,
            target=r.target,
            replicas=r.replicas,
            within_tolerance=r.within_tolerance,
            note=r.note,
        )
        for r in decision.recommendations
    ]
    at = _at(decision.observation.at_ms)
    assert at is not None
    return ScalingDecisionEvent.model_validate(
        {
            **{
                k: v
                for k, v in fields.items()
                if k not in ("at_ms", "last_scale_up_ms", "last_change_ms")
            },
            "at": at,
            "action": ScalingAction(decision.action.upper()),
            "recommendations": recommendations,
            "last_scale_up": _at(decision.last_scale_up_ms),
            "last_change": _at(decision.last_change_ms),
        }
    )
