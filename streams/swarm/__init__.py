"""SWARM, the autoscaler: how many replicas each agent type's consumer group should run.

This package holds the pure policy (:mod:`streams.swarm.policy`): the
``swarm.configureScaling`` settings, one observation of an agent type (consumer
lag, CPU and memory per replica), and :func:`decide_scale`, which turns them into a
:class:`ScalingDecision` that says what to do and why. No Kafka I/O happens here;
the loop that measures lag and applies decisions builds on these names.
"""

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
