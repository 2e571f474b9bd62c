"""The agent contract: subclass :class:`Agent`, write ``async def handle(task)``.

A user's agent knows nothing about Kafka. It gets an :class:`AgentTask` and
returns a :class:`TaskOutcome` (metrics and output references); :func:`execute`
turns that, an :class:`AgentFault`, any other exception or a timeout into the
:class:`AgentResult` the engine reads. :mod:`.runner` feeds it from Kafka and
:mod:`.testing` feeds it from a test, with the same :func:`execute`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from agents.runtime.manifest import AgentManifest
from buildkit.contracts.events import (
    ActionKind,
    AgentError,
    AgentResult,
    AgentTask,
    GitLabAction,
    TaskStatus,
)
from buildkit.errors import BuildKitError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_CODE",
    "UNHANDLED_CODE",
    "ActionRequest",
    "Agent",
    "AgentFault",
    "Execution",
    "TaskOutcome",
    "execute",
    "run_task",
    "task_actions",
    "task_result",
]

#: Seconds a task may run when neither the task nor the runner says otherwise.
DEFAULT_TIMEOUT_S = 300.0
#: The error code of a task that ran past its timeout.
TIMEOUT_CODE = "agent.timeout"
#: The error code of an exception that is not an :class:`AgentFault`.
UNHANDLED_CODE = "agent.unhandled_exception"


class ActionRequest(BaseModel):
    """A GitLab side effect an agent asks for (a note, a commit status, labels, a wiki
    page). The runner publishes it on ``bar.gitlab.actions`` as a
    :class:`~buildkit.contracts.events.GitLabAction` whose id derives from the task id
    and the request's position, so a task run twice asks for the same actions and the
    sink does each once."""

    model_config = ConfigDict(extra="forbid")

    kind: ActionKind
    project_id: int
    target_iid: int | None = None
    target: str | None = None
    sha: str | None = None
    body: str | None = None
    state: str | None = None
    title: str | None = None
    labels: list[str] = Field(default_factory=list)


class TaskOutcome(BaseModel):
    """What a successful ``handle`` returns: numbers for gates, references to artifacts,
    and the GitLab actions to take."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict, description="artifact name to reference")
    actions: list[ActionRequest] = Field(default_factory=list)


class AgentFault(BuildKitError):
    """A failure the agent means: a stable dotted ``code`` the engine branches on and
    whether trying again may help, e.g.
    ``AgentFault("qits.coverage_below_threshold", "coverage 61% < 80%", retryable=False)``."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        retryable: bool = False,
        actions: list[ActionRequest] | None = None,
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.retryable = retryable
        #: GitLab actions still taken although the task failed (a governor's failed
        #: commit status and the note that explains it).
        self.actions = list(actions or [])


class Agent:
    """Base class of every agent: set ``manifest`` (class attribute or constructor)
    and implement :meth:`handle`."""

    manifest: AgentManifest

    def __init__(self, manifest: AgentManifest | None = None) -> None:
        found = manifest if manifest is not None else getattr(type(self), "manifest", None)
        if found is None:
            raise TypeError(
                f"{type(self).__name__} has no manifest: pass one to the constructor or set "
                "the class attribute `manifest = load_manifest(...)`"
            )
        self.manifest = found

    @property
    def name(self) -> str:
        """The agent's name from its manifest."""
        return self.manifest.name

    async def handle(self, task: AgentTask) -> TaskOutcome:
        """Do the work of ``task``; raise :class:`AgentFault` for a failure with a code."""
        raise NotImplementedError(f"{type(self).__name__}.handle is not implemented")


def _now_ms() -> datetime:
    """Now, truncated to the millisecond Avro ``timestamp-millis`` keeps."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Execution:
    """One task run: its result and the GitLab actions it asked for."""

    result: AgentResult
    actions: list[GitLabAction] = field(default_factory=list)


async def execute(
    agent: Agent, task: AgentTask, *, default_timeout_s: float = DEFAULT_TIMEOUT_S
) -> AgentResult:
    """The :class:`AgentResult` of running ``task`` (see :func:`run_task`)."""
    return (await run_task(agent, task, default_timeout_s=default_timeout_s)).result


async def run_task(
    agent: Agent, task: AgentTask, *, default_timeout_s: float = DEFAULT_TIMEOUT_S
) -> Execution:
    """Run ``agent.handle(task)`` within the task's timeout and describe how it ended.

    The timeout is ``task.timeout_ms`` if set, else ``default_timeout_s``. Never
    raises for what the handler does: a fault, an exception and a timeout all
    become a result with an :class:`AgentError`. The actions are the outcome's, or
    the fault's when the handler failed on purpose.
    """
    timeout_s = task.timeout_ms / 1000 if task.timeout_ms is not None else default_timeout_s
    started = _now_ms()
    status = TaskStatus.SUCCEEDED
    outcome = TaskOutcome()
    error: AgentError | None = None
    requests: list[ActionRequest] = []
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            outcome = await agent.handle(task)
        if not isinstance(outcome, TaskOutcome):
            raise TypeError(
                f"{type(agent).__name__}.handle returned {type(outcome).__name__}, "
                "expected TaskOutcome"
            )
        requests = outcome.actions
    except AgentFault as fault:
        status = TaskStatus.FAILED
        error = AgentError(code=fault.code, message=fault.message, retryable=fault.retryable)
        requests = fault.actions
    except TimeoutError as exc:
        # Only our deadline is a timeout; a TimeoutError the handler raised is its failure.
        if deadline.expired():
            status = TaskStatus.TIMED_OUT
            error = AgentError(
                code=TIMEOUT_CODE,
                message=f"task {task.task_id} ran longer than {timeout_s:g}s",
                retryable=True,
            )
        else:
            status, error = TaskStatus.FAILED, _unhandled(exc)
    except Exception as exc:
        status, error = TaskStatus.FAILED, _unhandled(exc)
    result = task_result(task, status, started=started, outcome=outcome, error=error)
    return Execution(result, task_actions(task, requests, at=result.finished_at))


def task_actions(
    task: AgentTask, requests: list[ActionRequest], *, at: datetime | None = None
) -> list[GitLabAction]:
    """``requests`` as :class:`GitLabAction` events: ids are a UUID5 of the task id, the
    attempt and the position, so a redelivered attempt asks for the very same actions."""
    created = at or _now_ms()
    return [
        GitLabAction(
            action_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bar:{task.task_id}:{task.attempt}:{n}")),
            requested_by=task.agent,
            run_id=task.run_id,
            created_at=created,
            **request.model_dump(),
        )
        for n, request in enumerate(requests)
    ]


def task_result(
    task: AgentTask,
    status: TaskStatus,
    *,
    started: datetime,
    outcome: TaskOutcome | None = None,
    error: AgentError | None = None,
) -> AgentResult:
    """The result of ``task``: its identity, how it ended, and (on success) the outcome."""
    succeeded = status is TaskStatus.SUCCEEDED and outcome is not None
    return AgentResult(
        task_id=task.task_id,
        agent=task.agent,
        run_id=task.run_id,
        stage=task.stage,
        attempt=task.attempt,
        status=status,
        metrics=outcome.metrics if succeeded and outcome else {},
        outputs=outcome.outputs if succeeded and outcome else {},
        error=error,
        started_at=started,
        finished_at=_now_ms(),
    )


def _unhandled(exc: Exception) -> AgentError:
    return AgentError(code=UNHANDLED_CODE, message=str(exc) or type(exc).__name__, retryable=True)
