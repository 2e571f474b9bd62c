"""Event contracts: the pydantic models, their enums and the Avro codec.

Each event type is one pydantic model (:mod:`buildkit.contracts.events`, the
workflow engine's in :mod:`buildkit.contracts.roe`, SWARM's in
:mod:`buildkit.contracts.swarm`) and one
``schemas/*.avsc`` record; ``buildkit schemas check`` proves the two agree and
that every change stays BACKWARD_TRANSITIVE compatible. Importing this package
stays cheap: stdlib and pydantic only, no Kafka client.
"""

from buildkit.contracts.base import Event, event_types, register
from buildkit.contracts.codec import Codec
from buildkit.contracts.events import (
    ActionKind,
    ActionStatus,
    AgentError,
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentResult,
    AgentTask,
    GitLabAction,
    GitLabActionOutcome,
    GitLabEvent,
    ReplicaState,
    TaskStatus,
)
from buildkit.contracts.roe import (
    WorkflowCommand,
    WorkflowCommandKind,
    WorkflowEvent,
    WorkflowEventKind,
    run_id_for_trigger,
)
from buildkit.contracts.swarm import (
    MetricRecommendation,
    ReplicaEvent,
    ReplicaEventKind,
    ScalingAction,
    ScalingDecisionEvent,
    ScalingMetric,
    SwarmCommand,
    SwarmCommandKind,
)

__all__ = [
    "ActionKind",
    "ActionStatus",
    "AgentError",
    "AgentHeartbeat",
    "AgentKind",
    "AgentRegistration",
    "AgentResult",
    "AgentTask",
    "Codec",
    "Event",
    "GitLabAction",
    "GitLabActionOutcome",
    "GitLabEvent",
    "MetricRecommendation",
    "ReplicaEvent",
    "ReplicaEventKind",
    "ReplicaState",
    "ScalingAction",
    "ScalingDecisionEvent",
    "ScalingMetric",
    "SwarmCommand",
    "SwarmCommandKind",
    "TaskStatus",
    "WorkflowCommand",
    "WorkflowCommandKind",
    "WorkflowEvent",
    "WorkflowEventKind",
    "event_types",
    "register",
    "run_id_for_trigger",
]
