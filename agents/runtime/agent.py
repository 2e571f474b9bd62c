"""The agent contract: subclass :class:`Agent`, write ``async def handle(task)``.

A user's agent knows nothing about Kafka. It gets an :class:`AgentTask` and
returns a :class:`TaskOutcome` (metrics and output references); :func:`execute`
turns that, an :class:`AgentFault`, any other exception or a timeout into the
:class:`AgentResult` the engine reads. :mod:`.runner` feeds it from Kafka and
:mod:`.testing` feeds it from a test, with the same :func:`execute`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from agents.runtime.manifest import AgentManifest
from buildkit.contracts.events import AgentError, AgentResult, AgentTask, TaskStatus
from buildkit.errors import BuildKitError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_CODE",
    "UNHANDLED_CODE",
    "Agent",
    "AgentFault",
    "TaskOutcome",
    "execute",
    "task_result",
]

#: Seconds a task may run when neither the task nor the runner says otherwise.
DEFAULT_TIMEOUT_S = 300.0
#: The error code of a task that ran past its timeout.
TIMEOUT_CODE = "agent.timeout"
#: The error code of an exception that is not an :class:`AgentFault`.
UNHANDLED_CODE = "agent.unhandled_exception"


class TaskOutcome(BaseModel):
    """What a successful ``handle`` returns: numbers for gates, references to artifacts."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict, description="artifact name to reference")


class AgentFault(BuildKitError):
    """A failure the agent means: a stable dotted ``code`` the engine branches on and
    whether trying again may help, e.g.
    ``AgentFault("qits.coverage_below_threshold", "coverage 61% < 80%", retryable=False)``."""

    def __init__(self, code: str, message: str = "", *, retryable: bool = False) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.retryable = retryable


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


async def execute(
    agent: Agent, task: AgentTask, *, default_timeout_s: float = DEFAULT_TIMEOUT_S
) -> AgentResult:
    """Run ``agent.handle(task)`` within the task's timeout and describe how it ended.

    The timeout is ``task.timeout_ms`` if set, else ``default_timeout_s``. Never
    raises for what the handler does: a fault, an exception and a timeout all
    become a result with an :class:`AgentError`.
    """
    timeout_s = task.timeout_ms / 1000 if task.timeout_ms is not None else default_timeout_s
    started = _now_ms()
    status = TaskStatus.SUCCEEDED
    outcome = TaskOutcome()
    error: AgentError | None = None
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            outcome = await agent.handle(task)
        if not isinstance(outcome, TaskOutcome):
            raise TypeError(
                f"{type(agent).__name__}.handle returned {type(outcome).__name__}, "
                "expected TaskOutcome"
            )
    except AgentFault as fault:
        status = TaskStatus.FAILED
        error = AgentError(code=fault.code, message=fault.message, retryable=fault.retryable)
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
    return task_result(task, status, started=started, outcome=outcome, error=error)


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
