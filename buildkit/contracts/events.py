"""The core event contracts: agent tasks and results, heartbeats, registrations,
GitLab events and GitLab actions. Each model mirrors one ``schemas/*.avsc``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from buildkit.contracts.base import Event, register


class TaskStatus(StrEnum):
    """How an agent task ended."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"


class AgentKind(StrEnum):
    """The four agent roles of the architecture."""

    GOVERNOR = "GOVERNOR"
    WORKER = "WORKER"
    CRITIC = "CRITIC"
    OBSERVER = "OBSERVER"


class ReplicaState(StrEnum):
    """What a replica reports about itself in a heartbeat."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    DRAINING = "DRAINING"


class ActionKind(StrEnum):
    """The GitLab side effects an agent may ask for."""

    ISSUE_NOTE = "ISSUE_NOTE"
    MERGE_REQUEST_NOTE = "MERGE_REQUEST_NOTE"
    COMMIT_STATUS = "COMMIT_STATUS"
    SET_LABELS = "SET_LABELS"
    WIKI_PAGE = "WIKI_PAGE"


class ActionStatus(StrEnum):
    """How the GitLab sink ended an action."""

    DONE = "DONE"
    ALREADY_DONE = "ALREADY_DONE"
    FAILED = "FAILED"


class AgentError(BaseModel):
    """A failure with a stable dotted code the engine can branch on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str
    retryable: bool = False


@register
class AgentTask(Event):
    """A unit of work dispatched to an agent on ``bar.tasks.<agent>``."""

    schema_file = "agent_task.avsc"

    task_id: str
    agent: str
    run_id: str | None = None
    stage: str | None = None
    attempt: int = 1
    inputs: dict[str, str] = Field(default_factory=dict, description="artifact name to reference")
    parameters_json: str = "{}"
    created_at: datetime
    timeout_ms: int | None = None


@register
class AgentResult(Event):
    """The outcome of one task attempt, on ``bar.tasks.results``."""

    schema_file = "agent_result.avsc"

    task_id: str
    agent: str
    run_id: str | None = None
    stage: str | None = None
    attempt: int = 1
    status: TaskStatus
    metrics: dict[str, float] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict, description="artifact name to reference")
    error: AgentError | None = None
    started_at: datetime
    finished_at: datetime
    replica_id: str | None = Field(default=None, description="the replica that ran the attempt")


@register
class AgentHeartbeat(Event):
    """A replica's liveness and load, on ``bar.agents.heartbeats``."""

    schema_file = "agent_heartbeat.avsc"

    agent: str
    replica_id: str
    state: ReplicaState
    in_flight: int = 0
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    sent_at: datetime
    partitions: list[int] = Field(
        default_factory=list, description="task-topic partitions assigned to the replica"
    )
    backlog: int = Field(default=0, description="tasks waiting in the replica's partitions")
    task_id: str | None = Field(default=None, description="the task the replica is running")


@register
class AgentRegistration(Event):
    """An agent's identity and capabilities, on the compacted ``bar.agents.registry``."""

    schema_file = "agent_registration.avsc"

    agent_id: str
    name: str
    kind: AgentKind
    version: str
    capabilities: list[str] = Field(default_factory=list)
    task_topic: str
    registered_at: datetime
    active: bool = True


@register
class GitLabEvent(Event):
    """A GitLab webhook delivery, normalized; ``raw_json`` keeps the original body."""

    schema_file = "gitlab_event.avsc"

    event_id: str
    kind: str
    action: str | None = None
    project_id: int | None = None
    project_path: str | None = None
    object_id: int | None = None
    object_iid: int | None = None
    labels: list[str] = Field(default_factory=list)
    author: str | None = None
    ref: str | None = None
    occurred_at: datetime
    received_at: datetime
    raw_json: str


@register
class GitLabAction(Event):
    """A side effect on GitLab for the sink to execute (outbox), on ``bar.gitlab.actions``."""

    schema_file = "gitlab_action.avsc"

    action_id: str
    kind: ActionKind
    project_id: int
    target_iid: int | None = None
    sha: str | None = None
    body: str | None = None
    state: str | None = None
    title: str | None = None
    labels: list[str] = Field(default_factory=list)
    requested_by: str
    run_id: str | None = None
    created_at: datetime
    target: str | None = Field(
        default=None,
        description="what target_iid names for SET_LABELS: issue (default) or merge_request",
    )


@register
class GitLabActionOutcome(Event):
    """What the GitLab sink did with one action, on ``bar.gitlab.action-outcomes``."""

    schema_file = "gitlab_action_outcome.avsc"

    action_id: str
    kind: ActionKind
    project_id: int
    status: ActionStatus
    attempts: int = 1
    http_status: int | None = None
    reason: str | None = None
    reference: str | None = Field(
        default=None, description="what GitLab made: a note id, a wiki slug, a status id"
    )
    finished_at: datetime
