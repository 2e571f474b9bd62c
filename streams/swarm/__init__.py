"""SWARM, the autoscaler: how many replicas each agent type's consumer group runs.

The pure policy (:mod:`.policy`: the ``swarm.configureScaling`` settings, an
observation, :func:`decide_scale`) is exported here; the controller loop
(:mod:`.controller`), the backends (:mod:`.local`, :mod:`.kubernetes`), load
balancing (:mod:`.balancing`), the Python API (:mod:`.api`) and the CLI build on it.
The names load on first use, so the console script can register the ``swarm``
commands without paying for pydantic models it may not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.swarm.policy import (
        MetricRecommendation,
        Observation,
        ScalingDecision,
        ScalingHistory,
        ScalingPolicy,
        decide_scale,
    )

__all__ = [
    "MetricRecommendation",
    "Observation",
    "ScalingDecision",
    "ScalingHistory",
    "ScalingPolicy",
    "decide_scale",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from streams.swarm import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'streams.swarm' has no attribute {name!r}")
