"""A workflow run's state as a fold over its events: ``evolve(state, event) -> state``.

The state holds nothing the events do not say, so replaying ``bar.roe.events`` from
the start into :func:`fold` rebuilds, for every run, exactly the state the live engine
had. States are never mutated: :func:`evolve` returns a new one (sharing what did
not change). The decisions that produce the events are in :mod:`streams.roe.decider`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from buildkit.contracts.codec import ts_to_millis
from buildkit.contracts.roe import WorkflowEvent
from buildkit.contracts.roe import WorkflowEventKind as K
from buildkit.errors import BuildKitError
from streams.roe.model import WorkflowSpec

__all__ = [
    "ReplayError",
    "RunState",
    "RunStatus",
    "StageState",
    "StageStatus",
    "evolve",
    "fold",
    "next_wakeup",
    "task_id_for",
]


class ReplayError(BuildKitError, ValueError):
    """Events that cannot be folded: a run's history starts without WORKFLOW_STARTED or
    has a gap in its sequence numbers."""


# -- state -----------------------------------------------------------------------------


class RunStatus(StrEnum):
    """Where a run is: RUNNING until it ends one of three ways."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StageStatus(StrEnum):
    """Where a stage is within its run."""

    PENDING = "PENDING"
    READY = "READY"
    DISPATCHED = "DISPATCHED"
    RETRY_WAIT = "RETRY_WAIT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


@dataclass(frozen=True)
class StageState:
    """One stage of a run. ``attempt`` is the last attempt dispatched (0: none yet);
    ``round_start`` the first attempt of the current retry budget."""

    name: str
    status: StageStatus = StageStatus.PENDING
    attempt: int = 0
    round_start: int = 1
    task_id: str | None = None
    agent: str | None = None
    topic: str | None = None
    dispatched_at_ms: int | None = None
    deadline_ms: int | None = None
    retry_at_ms: int | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    error_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RunState:
    """One run: its spec, inputs, status and stages, as of event ``seq``.

    Never mutated: :func:`evolve` returns a new state (sharing unchanged stages).
    """

    run_id: str
    workflow_id: str
    spec: WorkflowSpec
    inputs: Mapping[str, str]
    trigger_id: str | None
    stages: Mapping[str, StageState]
    seq: int
    started_at_ms: int
    status: RunStatus = RunStatus.RUNNING
    finished_at_ms: int | None = None
    reason: str | None = None
    ignored_results: int = 0

    @property
    def done(self) -> bool:
        """Whether the run has ended (succeeded, failed or cancelled)."""
        return self.status is not RunStatus.RUNNING

    def stage(self, name: str) -> StageState:
        """The state of stage ``name``."""
        return self.stages[name]


def task_id_for(run_id: str, stage: str, attempt: int) -> str:
    """The task id of ``attempt`` of ``stage`` in run ``run_id``; the same on every replay."""
    return f"{run_id}.{stage}.{attempt}"


def next_wakeup(state: RunState) -> int | None:
    """The earliest ``at_ms`` at which a :class:`Tick` would decide something for this
    run (a deadline or a retry falling due), or None when only a result or command can."""
    if state.done:
        return None
    due = [
        t
        for s in state.stages.values()
        for t in (
            s.deadline_ms if s.status is StageStatus.DISPATCHED else None,
            s.retry_at_ms if s.status is StageStatus.RETRY_WAIT else None,
        )
        if t is not None
    ]
    return min(due, default=None)


# -- evolve / fold ---------------------------------------------------------------------


def evolve(state: RunState | None, event: WorkflowEvent) -> RunState:
    """The state after ``event``. An event already folded (seq not past the state's)
    leaves the state as it is, so a duplicate delivery is harmless."""
    if state is None:
        if event.kind is not K.WORKFLOW_STARTED:
            raise ReplayError(
                f"event {event.event_id} ({event.kind}) comes before run {event.run_id} "
                "started: bar.roe.events must be replayed from the start"
            )
        return _started(event)
    if event.run_id != state.run_id:
        raise ReplayError(f"event {event.event_id} is not an event of run {state.run_id}")
    if event.seq <= state.seq:
        return state
    if event.seq != state.seq + 1 or event.kind is K.WORKFLOW_STARTED:
        raise ReplayError(
            f"event {event.event_id} ({event.kind}) does not follow event "
            f"{state.run_id}:{state.seq}: the run's history has a gap"
        )
    return replace(_EVOLVE[event.kind](state, event), seq=event.seq)


def fold(events: Iterable[WorkflowEvent]) -> dict[str, RunState]:
    """Every run's state from its events (``bar.roe.events`` in order), by run id."""
    states: dict[str, RunState] = {}
    for event in events:
        states[event.run_id] = evolve(states.get(event.run_id), event)
    return states


def _ms(value: Any) -> int | None:
    return None if value is None else ts_to_millis(value)


def _started(e: WorkflowEvent) -> RunState:
    if not e.spec_json:
        raise ReplayError(f"event {e.event_id}: WORKFLOW_STARTED without spec_json")
    spec = WorkflowSpec.model_validate_json(e.spec_json)
    return RunState(
        run_id=e.run_id,
        workflow_id=e.workflow_id,
        spec=spec,
        inputs=dict(e.inputs),
        trigger_id=e.trigger_id,
        stages={s.name: StageState(s.name) for s in spec.stages},
        seq=e.seq,
        started_at_ms=ts_to_millis(e.at),
    )


def _with_stage(state: RunState, e: WorkflowEvent, **changes: Any) -> RunState:
    name = e.stage or ""
    if name not in state.stages:
        raise ReplayError(f"event {e.event_id}: run {state.run_id} has no stage {name!r}")
    stages = dict(state.stages)
    stages[name] = replace(stages[name], **changes)
    return replace(state, stages=stages)


def _ready(s: RunState, e: WorkflowEvent) -> RunState:
    return _with_stage(s, e, status=StageStatus.READY)


def _dispatched(s: RunState, e: WorkflowEvent) -> RunState:
    before = s.stages[e.stage or ""] if e.stage in s.stages else None
    attempt = e.attempt or 1
    retrying = before is not None and before.status is StageStatus.RETRY_WAIT
    return _with_stage(
        s,
        e,
        status=StageStatus.DISPATCHED,
        attempt=attempt,
        round_start=before.round_start if retrying and before else attempt,
        task_id=e.task_id,
        agent=e.agent,
        topic=e.topic,
        dispatched_at_ms=ts_to_millis(e.at),
        deadline_ms=_ms(e.deadline),
        retry_at_ms=None,
        outputs={},
        metrics={},
        error_code=None,
        reason=e.reason,
    )


def _succeeded(s: RunState, e: WorkflowEvent) -> RunState:
    return _with_stage(
        s,
        e,
        status=StageStatus.SUCCEEDED,
        deadline_ms=None,
        outputs=dict(e.outputs),
        metrics=dict(e.metrics),
        reason=e.reason,
    )


def _gate_failed(s: RunState, e: WorkflowEvent) -> RunState:
    # Outputs are kept: downstream of an ``on_failure: continue`` stage may use them.
    return _with_stage(s, e, outputs=dict(e.outputs), metrics=dict(e.metrics), reason=e.reason)


def _timed_out(s: RunState, e: WorkflowEvent) -> RunState:
    # Always followed, in the same decision, by STAGE_RETRYING or STAGE_FAILED.
    return _with_stage(s, e, deadline_ms=None, error_code=e.error_code, reason=e.reason)


def _stage_failed(s: RunState, e: WorkflowEvent) -> RunState:
    return _with_stage(
        s,
        e,
        status=StageStatus.FAILED,
        deadline_ms=None,
        retry_at_ms=None,
        error_code=e.error_code,
        reason=e.reason,
    )


def _retrying(s: RunState, e: WorkflowEvent) -> RunState:
    return _with_stage(
        s,
        e,
        status=StageStatus.RETRY_WAIT,
        deadline_ms=None,
        retry_at_ms=_ms(e.retry_at),
        error_code=e.error_code,
        reason=e.reason,
    )


def _retry_requested(s: RunState, e: WorkflowEvent) -> RunState:
    stage = s.stages[e.stage or ""] if e.stage in s.stages else None
    resumed = replace(s, status=RunStatus.RUNNING, finished_at_ms=None, reason=None)
    return _with_stage(
        resumed,
        e,
        status=StageStatus.RETRY_WAIT,
        retry_at_ms=_ms(e.retry_at),
        round_start=(stage.attempt if stage else 0) + 1,
        reason=e.reason,
    )


def _result_ignored(s: RunState, e: WorkflowEvent) -> RunState:
    return replace(s, ignored_results=s.ignored_results + 1)


def _unchanged(s: RunState, e: WorkflowEvent) -> RunState:
    return s


_Evolver = Callable[[RunState, WorkflowEvent], RunState]


def _ended(status: RunStatus) -> _Evolver:
    in_flight = (StageStatus.READY, StageStatus.DISPATCHED, StageStatus.RETRY_WAIT)

    def apply(s: RunState, e: WorkflowEvent) -> RunState:
        stages = {
            name: replace(st, status=StageStatus.INTERRUPTED, deadline_ms=None, retry_at_ms=None)
            if st.status in in_flight
            else st
            for name, st in s.stages.items()
        }
        return replace(
            s, status=status, stages=stages, finished_at_ms=ts_to_millis(e.at), reason=e.reason
        )

    return apply


_EVOLVE: dict[K, _Evolver] = {
    K.STAGE_READY: _ready,
    K.STAGE_DISPATCHED: _dispatched,
    K.STAGE_SUCCEEDED: _succeeded,
    K.GATE_FAILED: _gate_failed,
    K.STAGE_TIMED_OUT: _timed_out,
    K.STAGE_FAILED: _stage_failed,
    K.STAGE_RETRYING: _retrying,
    K.STAGE_RETRY_REQUESTED: _retry_requested,
    K.RESULT_IGNORED: _result_ignored,
    K.COMMAND_REJECTED: _unchanged,
    K.WORKFLOW_SUCCEEDED: _ended(RunStatus.SUCCEEDED),
    K.WORKFLOW_FAILED: _ended(RunStatus.FAILED),
    K.WORKFLOW_CANCELLED: _ended(RunStatus.CANCELLED),
}
