"""The workflow engine's logic as pure functions: ``decide(state, command) -> events``,
``evolve(state, event) -> state`` and ``fold(events) -> states``.

No I/O and no clock reads: time arrives on every command as ``at_ms`` (milliseconds
since the epoch), what the engine knows of remote agents arrives as :class:`Remotes`.
Everything a decision depends on later is written into the events, so folding a
run's events (``bar.roe.events`` replayed from the start) rebuilds exactly the state
the live engine had. :func:`decide` builds its events by applying :func:`evolve` as
it goes, so the state it reasons about is always the fold of what it emitted.

The state and its fold live in :mod:`streams.roe.state`; this module re-exports
them, so ``from streams.roe.decider import decide, evolve, fold`` is the whole API.
The engine loop (:mod:`streams.roe.engine`) turns ``bar.roe.commands`` records into
commands with :func:`command_from_record`, results on ``bar.tasks.results`` into
:class:`RecordResult`, sends a :class:`Tick` to a running run when
:func:`next_wakeup` says it is due, writes the events to ``bar.roe.events`` (key:
run id) and turns each STAGE_DISPATCHED event into a task with :func:`task_for`.

Semantics, decided here:

* **Ids.** Event ids are ``<run_id>:<seq>`` (seq 1, 2, ... per run); task ids are
  ``<run_id>.<stage>.<attempt>``, so a re-dispatch after a crash carries the same id
  and agents can de-duplicate.
* **Start.** WORKFLOW_STARTED carries the spec as JSON and the inputs (declared
  defaults filled in), so a run never depends on files. A start for a run that exists
  (the same trigger delivered twice) decides nothing: it is idempotent. A missing
  required input fails the run at once (``roe.missing_input``).
* **Dispatch.** A stage is ready when each dependency succeeded or failed with
  ``on_failure: continue`` — stages downstream of a failed ``continue`` stage run,
  without the inputs it did not produce. Every ready stage is dispatched in the same
  decision (independent stages run in parallel): STAGE_READY, then STAGE_DISPATCHED
  with topic, agent, attempt, deadline, ``inputs`` (each declared input name mapped to
  the reference the nearest upstream stage reported in its result ``outputs``, else
  to the workflow input of that name) and ``parameters_json`` (run, stage, all
  workflow inputs, expected outputs).
* **Remote stages.** ``ossa://<network>/<agent>`` goes to
  ``bar.ossa.<network>.tasks.<agent>``. With ``fallbackLocal: true`` it goes to the
  local ``bar.tasks.<agent>`` instead when :class:`Remotes` saw no heartbeat from it
  within ``silence_ms``; decided again for each attempt.
* **Results** match on task id: a result for an unknown task, an older or timed-out
  attempt, a stage already finished, or a run no longer running becomes
  RESULT_IGNORED (recorded, no other change). SUCCEEDED is checked against the stage's
  conditions (the quality gate): STAGE_SUCCEEDED, or GATE_FAILED + STAGE_FAILED —
  never retried, since measuring the same artifacts again gives the same numbers.
* **Failures and timeouts.** A FAILED result, a TIMED_OUT result or a deadline passed
  (STAGE_TIMED_OUT) is retried with exponential backoff while the stage's ``retries``
  last (STAGE_RETRYING with ``retry_at``; the dispatch happens on the first command at
  or after it), unless the result's error says ``retryable: false`` (a FAILED result
  without an error is retried: its cause is unknown). Then STAGE_FAILED, and
  WORKFLOW_FAILED unless ``on_failure: continue``. In-flight stages of a failed or
  cancelled run become INTERRUPTED; their late results are ignored.
* **Time.** Every command, not only a :class:`Tick`, first handles the timeouts and
  due retries at its ``at_ms``; a result that arrives before the tick that would have
  timed its stage out is accepted.
* **Cancel** emits WORKFLOW_CANCELLED; nothing is dispatched afterwards.
* **Manual retry** (:class:`RetryStage`) applies to a FAILED stage of a running or
  failed run: STAGE_RETRY_REQUESTED resumes a failed run, gives the stage a fresh
  retry budget and dispatches its next attempt at once; interrupted stages are
  dispatched again too. Cancelled and succeeded runs are final.
* **Rejections.** A cancel or retry that cannot apply to an existing run emits
  COMMAND_REJECTED with the reason, so whoever sent it sees an answer on
  ``bar.roe.events``. Commands and results for an unknown run decide nothing.
* **Completion.** When every stage has succeeded or failed with ``continue``:
  WORKFLOW_SUCCEEDED.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from buildkit.catalog import remote_task_topic_name, task_topic_name
from buildkit.contracts.codec import millis_to_ts, ts_to_millis
from buildkit.contracts.events import AgentResult, AgentTask, TaskStatus
from buildkit.contracts.roe import (
    WorkflowCommand,
    WorkflowCommandKind,
    WorkflowEvent,
)
from buildkit.contracts.roe import WorkflowEventKind as K
from buildkit.errors import BuildKitError
from streams.roe.conditions import ConditionError, GateResult, evaluate_all
from streams.roe.model import StageSpec, WorkflowSpec
from streams.roe.state import (
    ReplayError,
    RunState,
    RunStatus,
    StageState,
    StageStatus,
    evolve,
    fold,
    next_wakeup,
    task_id_for,
)

__all__ = [
    "REMOTE_SILENCE_MS",
    "CancelRun",
    "Command",
    "InvalidCommand",
    "RecordResult",
    "Remotes",
    "ReplayError",
    "RetryStage",
    "RunState",
    "RunStatus",
    "StageState",
    "StageStatus",
    "StartRun",
    "Tick",
    "command_from_record",
    "decide",
    "evolve",
    "fold",
    "next_wakeup",
    "task_for",
    "task_id_for",
]

#: How long a remote agent may go without a heartbeat before ``fallbackLocal`` applies.
REMOTE_SILENCE_MS = 30_000


class InvalidCommand(BuildKitError, ValueError):
    """A ``bar.roe.commands`` record the engine cannot turn into a command."""


# -- commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRun:
    """Start run ``run_id`` of ``spec`` with workflow ``inputs``."""

    run_id: str
    spec: WorkflowSpec
    at_ms: int
    inputs: Mapping[str, str] = field(default_factory=dict)
    trigger_id: str | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class CancelRun:
    """Cancel run ``run_id``: stop dispatching, ignore later results."""

    run_id: str
    at_ms: int
    reason: str | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class RetryStage:
    """Retry failed stage ``stage`` of run ``run_id`` (resuming the run if it failed)."""

    run_id: str
    stage: str
    at_ms: int
    reason: str | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class RecordResult:
    """An agent's result, from ``bar.tasks.results``; routed by ``result.run_id``."""

    result: AgentResult
    at_ms: int

    @property
    def run_id(self) -> str | None:
        """The run the result belongs to (None for a task ROE did not dispatch)."""
        return self.result.run_id


@dataclass(frozen=True)
class Tick:
    """Time passed: time out overdue stages and dispatch due retries of a run."""

    at_ms: int


Command = StartRun | CancelRun | RetryStage | RecordResult | Tick


@dataclass(frozen=True)
class Remotes:
    """What the engine has seen of remote agents: the last heartbeat time (ms) per agent,
    keyed by the stage's agent string ``ossa://<network>/<agent>``."""

    last_seen_ms: Mapping[str, int] = field(default_factory=dict)
    silence_ms: int = REMOTE_SILENCE_MS

    def alive(self, agent: str, at_ms: int) -> bool:
        """Whether ``agent`` sent a heartbeat within ``silence_ms`` before ``at_ms``."""
        seen = self.last_seen_ms.get(agent)
        return seen is not None and at_ms - seen <= self.silence_ms


_NO_REMOTES = Remotes()


def command_from_record(record: WorkflowCommand, at_ms: int) -> StartRun | CancelRun | RetryStage:
    """The command a ``bar.roe.commands`` record stands for, as of ``at_ms`` (the engine's
    clock when it processes the record). Raises :class:`InvalidCommand`."""
    where = f"command {record.command_id} for run {record.run_id}"
    if record.kind is WorkflowCommandKind.START:
        if not record.spec_json:
            raise InvalidCommand(f"{where}: START needs spec_json (the WorkflowSpec as JSON)")
        try:
            spec = WorkflowSpec.model_validate_json(record.spec_json)
        except ValueError as exc:
            raise InvalidCommand(f"{where}: spec_json is not a valid workflow: {exc}") from exc
        if record.workflow_id is not None and record.workflow_id != spec.workflow_id:
            raise InvalidCommand(
                f'{where}: workflow_id "{record.workflow_id}" does not match the spec\'s '
                f'"{spec.workflow_id}"'
            )
        return StartRun(
            record.run_id, spec, at_ms, dict(record.inputs), record.trigger_id, record.command_id
        )
    if record.kind is WorkflowCommandKind.CANCEL:
        return CancelRun(record.run_id, at_ms, record.reason, record.command_id)
    if not record.stage:
        raise InvalidCommand(f"{where}: RETRY_STAGE needs the stage to retry")
    return RetryStage(record.run_id, record.stage, at_ms, record.reason, record.command_id)


# -- decide ----------------------------------------------------------------------------


def decide(
    state: RunState | None, command: Command, *, remotes: Remotes = _NO_REMOTES
) -> list[WorkflowEvent]:
    """The events ``command`` causes for the run in ``state`` (None: the run does not
    exist yet), numbered on from ``state.seq``; an empty list when it changes nothing.

    Every command but a cancel also times out overdue stages and dispatches due
    retries and ready stages as of its ``at_ms``; a :class:`Tick` does only that.
    ``remotes`` is read only when a remote stage with ``fallbackLocal`` is dispatched.
    Pure: the same arguments always give the same events. Fold each event into the
    state (:func:`evolve`) before deciding the next command.
    """
    if isinstance(command, StartRun):
        return _start(state, command, remotes) if state is None else []
    if state is None:
        return []
    if isinstance(command, Tick):
        em = _Emitter(state, command.at_ms)
    elif isinstance(command, CancelRun):
        em = _Emitter(state, command.at_ms, command.command_id)
        if state.done:
            em.emit(K.COMMAND_REJECTED, reason=f"cannot cancel: the run {state.status.lower()}")
        else:
            em.emit(K.WORKFLOW_CANCELLED, reason=command.reason or "cancelled")
        return em.events
    elif isinstance(command, RetryStage):
        em = _Emitter(state, command.at_ms, command.command_id)
        _retry_stage(em, command)
    else:
        em = _Emitter(state, command.at_ms)
        _record_result(em, command.result)
    _advance(em, remotes)
    return em.events


class _Emitter:
    """Builds a decision's events, folding each into ``state`` as it is emitted."""

    def __init__(self, state: RunState, at_ms: int, command_id: str | None = None) -> None:
        self.state = state
        self.at_ms = at_ms
        self.command_id = command_id
        self.events: list[WorkflowEvent] = []

    def emit(self, kind: K, **fields: Any) -> None:
        seq = self.state.seq + 1
        event = WorkflowEvent(
            event_id=f"{self.state.run_id}:{seq}",
            run_id=self.state.run_id,
            seq=seq,
            kind=kind,
            workflow_id=self.state.workflow_id,
            command_id=self.command_id,
            at=millis_to_ts(self.at_ms),
            **fields,
        )
        self.state = evolve(self.state, event)
        self.events.append(event)


def _start(state: None, cmd: StartRun, remotes: Remotes) -> list[WorkflowEvent]:
    spec = cmd.spec
    inputs = dict(cmd.inputs)
    for declared in spec.inputs:
        if declared.name not in inputs and declared.default is not None:
            inputs[declared.name] = declared.default
    started = WorkflowEvent(
        event_id=f"{cmd.run_id}:1",
        run_id=cmd.run_id,
        seq=1,
        kind=K.WORKFLOW_STARTED,
        workflow_id=spec.workflow_id,
        spec_json=spec.model_dump_json(),
        trigger_id=cmd.trigger_id,
        command_id=cmd.command_id,
        inputs=inputs,
        at=millis_to_ts(cmd.at_ms),
    )
    em = _Emitter(evolve(state, started), cmd.at_ms, cmd.command_id)
    em.events.append(started)
    missing = [i.name for i in spec.inputs if i.required and i.name not in inputs]
    if missing:
        em.emit(
            K.WORKFLOW_FAILED,
            error_code="roe.missing_input",
            reason=f"missing required workflow input(s): {', '.join(missing)}",
        )
    else:
        _advance(em, remotes)
    return em.events


def _retry_stage(em: _Emitter, cmd: RetryStage) -> None:
    state = em.state
    stage = state.stages.get(cmd.stage)
    problem = None
    if state.status in (RunStatus.CANCELLED, RunStatus.SUCCEEDED):
        problem = f"the run {state.status.lower()}"
    elif stage is None:
        problem = f"the run has no stage {cmd.stage!r} (stages: {', '.join(state.stages)})"
    elif stage.status is not StageStatus.FAILED:
        problem = f"stage {cmd.stage} is {stage.status.lower()}, only a failed stage can be retried"
    elif state.status is RunStatus.FAILED:
        blocking = [
            n
            for n, s in state.stages.items()
            if n != cmd.stage and _fails_run(state, n) and s.status is StageStatus.FAILED
        ]
        if blocking:
            problem = f"stage {blocking[0]} failed the run: retry it first"
    if problem is not None:
        em.emit(K.COMMAND_REJECTED, stage=cmd.stage, reason=f"cannot retry: {problem}")
        return
    assert stage is not None
    em.emit(
        K.STAGE_RETRY_REQUESTED,
        stage=cmd.stage,
        attempt=stage.attempt + 1,
        retry_at=millis_to_ts(em.at_ms),
        reason=cmd.reason or "retry requested",
    )


def _record_result(em: _Emitter, result: AgentResult) -> None:
    state = em.state
    stage = next((s for s in state.stages.values() if s.task_id == result.task_id), None)
    why = _why_ignored(state, result, stage)
    if why is not None or stage is None:  # no stage always comes with a reason
        em.emit(
            K.RESULT_IGNORED,
            stage=result.stage,
            attempt=result.attempt,
            task_id=result.task_id,
            agent=result.agent,
            outputs=dict(result.outputs),
            metrics=dict(result.metrics),
            error_code=result.error.code if result.error else None,
            reason=why,
        )
        return
    spec = state.spec.stage(stage.name)
    common: dict[str, Any] = {
        "stage": stage.name,
        "attempt": stage.attempt,
        "task_id": stage.task_id,
        "agent": result.agent,
    }
    if result.status is TaskStatus.SUCCEEDED:
        gate = _gate(spec, result.metrics)
        if gate.passed:
            em.emit(
                K.STAGE_SUCCEEDED,
                outputs=dict(result.outputs),
                metrics=dict(result.metrics),
                reason="; ".join(gate.reasons) or None,
                **common,
            )
            return
        reason = f"quality gate failed: {'; '.join(gate.reasons)}"
        em.emit(
            K.GATE_FAILED,
            outputs=dict(result.outputs),
            metrics=dict(result.metrics),
            error_code="roe.gate_failed",
            reason=reason,
            **common,
        )
        _fail_stage(em, stage.name, "roe.gate_failed", reason)
        return
    error = result.error
    if result.status is TaskStatus.TIMED_OUT:
        code, reason = "roe.agent_timed_out", "the agent reported a timeout"
    else:
        code, reason = "roe.agent_failed", "the agent reported a failure"
    if error is not None:
        code, reason = error.code, error.message
    retryable = result.status is TaskStatus.TIMED_OUT or error is None or error.retryable
    _fail_attempt(em, stage.name, code, reason, retryable=retryable)


def _why_ignored(state: RunState, result: AgentResult, stage: StageState | None) -> str | None:
    if state.done:
        return f"the run {state.status.lower()}"
    if stage is None:
        known = state.stages.get(result.stage or "")
        if known is not None and result.attempt < known.attempt:
            return (
                f"stale: attempt {result.attempt} of {known.name}, "
                f"attempt {known.attempt} is current"
            )
        return f"task {result.task_id} was not dispatched by this run"
    if stage.status is StageStatus.DISPATCHED:
        return None
    if stage.status is StageStatus.RETRY_WAIT:
        return f"attempt {stage.attempt} of {stage.name} already failed or timed out"
    return f"stage {stage.name} is already {stage.status.lower()}"


def _gate(spec: StageSpec, metrics: Mapping[str, float]) -> GateResult:
    try:
        return evaluate_all(spec.conditions, metrics)
    except ConditionError as exc:  # a validated spec never gets here; fail closed if it does
        return GateResult(passed=False, reasons=[str(exc)])


def _fails_run(state: RunState, stage: str) -> bool:
    return state.spec.stage(stage).on_failure == "fail"


def _fail_attempt(em: _Emitter, name: str, code: str, reason: str, *, retryable: bool) -> None:
    """Retry the stage's attempt with backoff if its budget allows, else fail the stage."""
    stage, spec = em.state.stages[name], em.state.spec.stage(name)
    used = stage.attempt - stage.round_start + 1
    if not retryable:
        _fail_stage(em, name, code, f"{reason} (not retryable)")
    elif used > spec.retries:
        tries = "1 attempt" if used == 1 else f"{used} attempts"
        _fail_stage(em, name, code, f"{reason} (after {tries})")
    else:
        delay_ms = round(spec.backoff.delay_s(used) * 1000)
        em.emit(
            K.STAGE_RETRYING,
            stage=name,
            attempt=stage.attempt + 1,
            task_id=stage.task_id,
            error_code=code,
            retry_at=millis_to_ts(em.at_ms + delay_ms),
            reason=f"{reason}; retry {used} of {spec.retries} in {delay_ms / 1000:g}s",
        )


def _fail_stage(em: _Emitter, name: str, code: str, reason: str) -> None:
    stage = em.state.stages[name]
    em.emit(
        K.STAGE_FAILED,
        stage=name,
        attempt=stage.attempt,
        task_id=stage.task_id,
        error_code=code,
        reason=reason,
    )
    if _fails_run(em.state, name):
        em.emit(
            K.WORKFLOW_FAILED,
            stage=name,
            error_code=code,
            reason=f"stage {name} failed: {reason}",
        )


def _advance(em: _Emitter, remotes: Remotes) -> None:
    """Time out overdue stages, dispatch due retries and ready stages, finish the run."""
    now = em.at_ms
    order = [s.name for s in em.state.spec.stages]
    for name in order:
        if em.state.done:
            return
        stage = em.state.stages[name]
        if stage.status is StageStatus.DISPATCHED and _due(stage.deadline_ms, now):
            timeout = em.state.spec.stage(name).timeout_s
            em.emit(
                K.STAGE_TIMED_OUT,
                stage=name,
                attempt=stage.attempt,
                task_id=stage.task_id,
                agent=stage.agent,
                deadline=millis_to_ts(stage.deadline_ms or now),
                error_code="roe.stage_timed_out",
                reason=f"no result within {timeout:g}s",
            )
            _fail_attempt(
                em, name, "roe.stage_timed_out", f"no result within {timeout:g}s", retryable=True
            )
    if em.state.done:
        return
    for name in order:
        stage = em.state.stages[name]
        if stage.status is StageStatus.RETRY_WAIT and _due(stage.retry_at_ms, now):
            _dispatch(em, name, remotes)
    for name in order:
        stage = em.state.stages[name]
        if stage.status in (StageStatus.PENDING, StageStatus.INTERRUPTED) and _deps_met(
            em.state, name
        ):
            em.emit(K.STAGE_READY, stage=name, attempt=stage.attempt + 1)
            _dispatch(em, name, remotes)
    stages = em.state.stages.values()
    if all(s.status in (StageStatus.SUCCEEDED, StageStatus.FAILED) for s in stages):
        failed = [s.name for s in stages if s.status is StageStatus.FAILED]
        em.emit(
            K.WORKFLOW_SUCCEEDED,
            reason=f"succeeded; failed and continued: {', '.join(failed)}" if failed else None,
        )


def _due(at_ms: int | None, now: int) -> bool:
    return at_ms is not None and at_ms <= now


def _deps_met(state: RunState, name: str) -> bool:
    for dep in state.spec.stage(name).dependencies:
        status = state.stages[dep].status
        if not (
            status is StageStatus.SUCCEEDED
            or (status is StageStatus.FAILED and not _fails_run(state, dep))
        ):
            return False
    return True


def _dispatch(em: _Emitter, name: str, remotes: Remotes) -> None:
    state, spec = em.state, em.state.spec.stage(name)
    attempt = state.stages[name].attempt + 1
    agent, topic, note = _route(spec, em.at_ms, remotes)
    deadline = None if spec.timeout_s is None else em.at_ms + round(spec.timeout_s * 1000)
    parameters = {
        "run_id": state.run_id,
        "workflow_id": state.workflow_id,
        "stage": name,
        "workflow_inputs": dict(state.inputs),
        "outputs": list(spec.outputs),
    }
    em.emit(
        K.STAGE_DISPATCHED,
        stage=name,
        attempt=attempt,
        task_id=task_id_for(state.run_id, name, attempt),
        agent=agent,
        topic=topic,
        inputs=_resolve_inputs(state, spec),
        parameters_json=json.dumps(parameters, sort_keys=True, separators=(",", ":")),
        deadline=None if deadline is None else millis_to_ts(deadline),
        reason=note,
    )


def _route(spec: StageSpec, now: int, remotes: Remotes) -> tuple[str, str, str | None]:
    """``(agent, topic, note)`` for dispatching ``spec`` now."""
    remote = spec.remote
    if remote is None:
        return spec.agent, task_topic_name(spec.agent), None
    network, agent = remote
    if spec.fallback_local and not remotes.alive(spec.agent, now):
        note = (
            f"no heartbeat from {spec.agent} within {remotes.silence_ms / 1000:g}s: "
            f"falling back to the local {agent}"
        )
        return agent, task_topic_name(agent), note
    return spec.agent, remote_task_topic_name(network, agent), None


def _resolve_inputs(state: RunState, spec: StageSpec) -> dict[str, str]:
    """Each declared input: the reference reported by the nearest upstream stage (breadth
    first along dependencies), else the workflow input of that name; absent if neither."""
    found: dict[str, str] = {}
    wanted = [i for i in spec.inputs if i]
    seen: set[str] = set()
    queue = deque(spec.dependencies)
    while queue and len(found) < len(wanted):
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        outputs = state.stages[name].outputs
        for item in wanted:
            if item not in found and item in outputs:
                found[item] = outputs[item]
        queue.extend(state.spec.stage(name).dependencies)
    for item in wanted:
        if item not in found and item in state.inputs:
            found[item] = state.inputs[item]
    return {item: found[item] for item in wanted if item in found}


# -- tasks -----------------------------------------------------------------------------


def task_for(event: WorkflowEvent) -> tuple[str, AgentTask]:
    """The topic and :class:`AgentTask` a STAGE_DISPATCHED event stands for (key: task id).

    ``AgentTask.agent`` is the agent as routed: ``ossa://<network>/<agent>`` for a
    remote stage, the local agent's name otherwise (also after a fallback).
    """
    if event.kind is not K.STAGE_DISPATCHED:
        raise ValueError(f"event {event.event_id} is {event.kind}, not STAGE_DISPATCHED")
    if event.topic is None or event.task_id is None or event.agent is None:
        raise ValueError(f"event {event.event_id} lacks its topic, task id or agent")
    timeout_ms = None
    if event.deadline is not None:
        timeout_ms = ts_to_millis(event.deadline) - ts_to_millis(event.at)
    task = AgentTask(
        task_id=event.task_id,
        agent=event.agent,
        run_id=event.run_id,
        stage=event.stage,
        attempt=event.attempt or 1,
        inputs=dict(event.inputs),
        parameters_json=event.parameters_json or "{}",
        created_at=event.at,
        timeout_ms=timeout_ms,
    )
    return event.topic, task
