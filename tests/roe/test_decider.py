"""The pure decider: workflows driven command by command, and replay equal to live state.

No broker: the decider is a pure function, so these tests feed it commands and fold
its events, the way the engine loop does with Kafka around it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildkit.contracts import (
    AgentError,
    AgentResult,
    Codec,
    TaskStatus,
    WorkflowCommand,
    WorkflowCommandKind,
    WorkflowEvent,
    WorkflowEventKind,
    run_id_for_trigger,
)
from streams.roe.decider import (
    CancelRun,
    Command,
    RecordResult,
    Remotes,
    ReplayError,
    RetryStage,
    RunState,
    RunStatus,
    StageStatus,
    StartRun,
    Tick,
    command_from_record,
    decide,
    evolve,
    fold,
    next_wakeup,
    task_for,
)
from streams.roe.model import Backoff, InputSpec, StageSpec, WorkflowSpec
from streams.roe.spec import builtin_workflows, load_workflow

K = WorkflowEventKind
T0 = 1_700_000_000_000  # ms since the epoch
CODEC = Codec.for_model(WorkflowEvent)


def workflow(*stages: StageSpec, inputs: tuple[InputSpec, ...] = ()) -> WorkflowSpec:
    return WorkflowSpec(name="Test Flow", version="1.0.0", stages=stages, inputs=inputs)


def stage(name: str, *deps: str, **kw: Any) -> StageSpec:
    kw.setdefault("agent", f"agent-{name}")
    return StageSpec(name=name, dependencies=deps, **kw)


class Run:
    """One run driven live: each decision's events folded into ``state`` as they come."""

    def __init__(self, spec: WorkflowSpec, run_id: str = "run-1", **inputs: str) -> None:
        self.run_id = run_id
        self.state: RunState | None = None
        self.log: list[WorkflowEvent] = []
        self.last = self.send(StartRun(run_id, spec, T0, inputs, trigger_id="trigger-1"))

    def send(self, command: Command, remotes: Remotes | None = None) -> list[WorkflowEvent]:
        events = decide(self.state, command, remotes=remotes or Remotes())
        for event in events:
            self.state = evolve(self.state, event)
        self.log.extend(events)
        self.last = events
        return events

    def result(
        self,
        stage_name: str,
        status: TaskStatus = TaskStatus.SUCCEEDED,
        *,
        at: int,
        attempt: int | None = None,
        error: AgentError | None = None,
        **fields: Any,
    ) -> list[WorkflowEvent]:
        dispatched = self.dispatch_of(stage_name, attempt)
        return self.send(RecordResult(result_for(dispatched, status, error=error, **fields), at))

    def dispatch_of(self, stage_name: str, attempt: int | None = None) -> WorkflowEvent:
        found = [
            e
            for e in self.log
            if e.kind is K.STAGE_DISPATCHED
            and e.stage == stage_name
            and (attempt is None or e.attempt == attempt)
        ]
        return found[-1]

    @property
    def run(self) -> RunState:
        assert self.state is not None
        return self.state


def result_for(
    dispatched: WorkflowEvent,
    status: TaskStatus = TaskStatus.SUCCEEDED,
    *,
    metrics: Mapping[str, float] | None = None,
    outputs: Mapping[str, str] | None = None,
    error: AgentError | None = None,
) -> AgentResult:
    """The result an agent would report for the task of a STAGE_DISPATCHED event."""
    _, task = task_for(dispatched)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    return AgentResult(
        task_id=task.task_id,
        agent=task.agent,
        run_id=task.run_id,
        stage=task.stage,
        attempt=task.attempt,
        status=status,
        metrics=dict(metrics or {}),
        outputs=dict(outputs or {}),
        error=error,
        started_at=when,
        finished_at=when,
    )


def kinds(events: Iterable[WorkflowEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind.value, e.stage) for e in events]


def artifact(run_id: str, stage_name: str, name: str) -> str:
    return f"artifact://{run_id}/{stage_name}/{name}"


# -- the feature workflow ----------------------------------------------------------------


def feature_workflow() -> WorkflowSpec:
    [path] = [p for p in builtin_workflows() if p.name == "feature-workflow.yml"]
    return load_workflow(path)


def run_feature_workflow_to_the_gate() -> Run:
    run = Run(feature_workflow())
    assert kinds(run.last) == [
        ("WORKFLOW_STARTED", None),
        ("STAGE_READY", "api-design"),
        ("STAGE_DISPATCHED", "api-design"),
    ]
    spec_ref = artifact("run-1", "api-design", "openapi-spec.yaml")
    tests_ref = artifact("run-1", "test-generation", "tests/")
    run.result("api-design", at=T0 + 1000, outputs={"openapi-spec.yaml": spec_ref})
    assert kinds(run.last) == [
        ("STAGE_SUCCEEDED", "api-design"),
        ("STAGE_READY", "test-generation"),
        ("STAGE_DISPATCHED", "test-generation"),
    ]
    assert run.last[-1].inputs == {"openapi-spec.yaml": spec_ref}
    run.result("test-generation", at=T0 + 2000, outputs={"tests/": tests_ref})
    topic, task = task_for(run.last[-1])
    # implementation reads the spec from its grand-parent stage and the tests from its parent
    assert (topic, task.agent, task.stage) == (
        "bar.tasks.api-builder",
        "api-builder",
        "implementation",
    )
    assert task.inputs == {"openapi-spec.yaml": spec_ref, "tests/": tests_ref}
    assert task.task_id == "run-1.implementation.1" and task.run_id == "run-1"
    run.result("implementation", at=T0 + 3000, outputs={"src/": artifact("run-1", "impl", "src/")})
    assert kinds(run.last)[-1] == ("STAGE_DISPATCHED", "quality-gate")
    return run


def test_feature_workflow_runs_its_stages_in_order_and_passes_outputs_as_references() -> None:
    run = run_feature_workflow_to_the_gate()

    run.result("quality-gate", at=T0 + 4000, metrics={"coverage": 85.0, "phpcs_violations": 0.0})

    assert kinds(run.last) == [("STAGE_SUCCEEDED", "quality-gate"), ("WORKFLOW_SUCCEEDED", None)]
    assert run.run.status is RunStatus.SUCCEEDED
    assert [e.seq for e in run.log] == list(range(1, len(run.log) + 1))
    assert [e.event_id for e in run.log][:2] == ["run-1:1", "run-1:2"]
    assert fold(run.log) == {"run-1": run.run}


def test_failing_quality_gate_fails_the_workflow_naming_the_metric() -> None:
    run = run_feature_workflow_to_the_gate()

    run.result("quality-gate", at=T0 + 4000, metrics={"coverage": 72.5, "phpcs_violations": 0.0})

    assert kinds(run.last) == [
        ("GATE_FAILED", "quality-gate"),
        ("STAGE_FAILED", "quality-gate"),
        ("WORKFLOW_FAILED", "quality-gate"),
    ]
    gate, _, failed = run.last
    assert gate.metrics == {"coverage": 72.5, "phpcs_violations": 0.0}
    assert "coverage 72.5 < 80" in (gate.reason or "")
    assert failed.error_code == "roe.gate_failed"
    assert "coverage 72.5 < 80" in (failed.reason or "")
    assert run.run.status is RunStatus.FAILED


def test_independent_stages_are_dispatched_together_and_joined() -> None:
    run = Run(workflow(stage("a"), stage("b", "a"), stage("c", "a"), stage("d", "b", "c")))

    run.result("a", at=T0 + 1)
    assert kinds(run.last) == [
        ("STAGE_SUCCEEDED", "a"),
        ("STAGE_READY", "b"),
        ("STAGE_DISPATCHED", "b"),
        ("STAGE_READY", "c"),
        ("STAGE_DISPATCHED", "c"),
    ]
    assert {task_for(e)[0] for e in run.last[2::2]} == {"bar.tasks.agent-b", "bar.tasks.agent-c"}
    run.result("c", at=T0 + 2)
    assert kinds(run.last) == [("STAGE_SUCCEEDED", "c")]  # d waits for b as well
    run.result("b", at=T0 + 3)
    assert kinds(run.last)[-1] == ("STAGE_DISPATCHED", "d")


# -- failures, timeouts, retries ---------------------------------------------------------


def test_timeout_retries_with_exponential_backoff_then_fails_the_workflow() -> None:
    backoff = Backoff(initial_s=1, multiplier=2, max_s=60)
    run = Run(workflow(stage("slow", timeout_s=10, retries=2, backoff=backoff)))
    first = run.last[-1]
    assert first.deadline == datetime.fromtimestamp((T0 + 10_000) / 1000, UTC)
    assert task_for(first)[1].timeout_ms == 10_000
    assert next_wakeup(run.run) == T0 + 10_000

    assert run.send(Tick(T0 + 9_999)) == []
    run.send(Tick(T0 + 10_000))
    assert kinds(run.last) == [("STAGE_TIMED_OUT", "slow"), ("STAGE_RETRYING", "slow")]
    retrying = run.last[1]
    assert retrying.retry_at == datetime.fromtimestamp((T0 + 11_000) / 1000, UTC)
    assert retrying.attempt == 2 and run.run.stage("slow").status is StageStatus.RETRY_WAIT
    assert next_wakeup(run.run) == T0 + 11_000

    assert run.send(Tick(T0 + 10_500)) == []
    run.send(Tick(T0 + 11_000))
    assert kinds(run.last) == [("STAGE_DISPATCHED", "slow")]
    assert (run.last[0].attempt, run.last[0].task_id) == (2, "run-1.slow.2")

    run.send(Tick(T0 + 21_000))
    assert run.last[1].retry_at == datetime.fromtimestamp((T0 + 23_000) / 1000, UTC)  # 2 s
    run.send(Tick(T0 + 23_000))
    assert run.last[0].task_id == "run-1.slow.3"
    run.send(Tick(T0 + 33_000))

    assert kinds(run.last) == [
        ("STAGE_TIMED_OUT", "slow"),
        ("STAGE_FAILED", "slow"),
        ("WORKFLOW_FAILED", "slow"),
    ]
    assert run.last[1].error_code == "roe.stage_timed_out"
    assert "after 3 attempts" in (run.last[1].reason or "")
    assert run.run.status is RunStatus.FAILED and next_wakeup(run.run) is None


def test_a_failed_result_is_retried_unless_its_error_is_not_retryable() -> None:
    run = Run(workflow(stage("a", retries=3, backoff=Backoff(initial_s=0))))

    run.result(
        "a",
        TaskStatus.FAILED,
        at=T0 + 1,
        error=AgentError(code="x.flaky", message="boom", retryable=True),
    )
    # zero backoff: the retry is due at once and dispatched in the same decision
    assert kinds(run.last) == [("STAGE_RETRYING", "a"), ("STAGE_DISPATCHED", "a")]
    run.result("a", TaskStatus.FAILED, at=T0 + 2)  # no error: unknown cause, retried
    assert kinds(run.last) == [("STAGE_RETRYING", "a"), ("STAGE_DISPATCHED", "a")]
    run.result(
        "a",
        TaskStatus.FAILED,
        at=T0 + 3,
        error=AgentError(code="qits.coverage_below_threshold", message="62%"),
    )

    assert kinds(run.last) == [("STAGE_FAILED", "a"), ("WORKFLOW_FAILED", "a")]
    assert run.last[0].error_code == "qits.coverage_below_threshold"
    assert "not retryable" in (run.last[0].reason or "")


def test_on_failure_continue_runs_the_downstream_stages_and_the_workflow_succeeds() -> None:
    run = Run(
        workflow(
            stage("scan", on_failure="continue", outputs=("report",)),
            stage("build", outputs=("bin",)),
            stage("ship", "scan", "build", inputs=("report", "bin")),
        )
    )
    run.result("scan", TaskStatus.FAILED, at=T0 + 1)
    assert kinds(run.last) == [("STAGE_FAILED", "scan")]
    run.result("build", at=T0 + 2, outputs={"bin": "artifact://bin"})
    ship = run.last[-1]
    assert (ship.kind, ship.stage) == (K.STAGE_DISPATCHED, "ship")
    assert ship.inputs == {"bin": "artifact://bin"}  # scan produced no report

    run.result("ship", at=T0 + 3)
    assert kinds(run.last) == [("STAGE_SUCCEEDED", "ship"), ("WORKFLOW_SUCCEEDED", None)]
    assert "scan" in (run.last[1].reason or "")


def test_cancel_stops_dispatching_and_late_results_are_recorded_and_ignored() -> None:
    run = Run(workflow(stage("a"), stage("b", "a")))

    run.send(CancelRun("run-1", T0 + 1, reason="not needed", command_id="c-9"))
    assert kinds(run.last) == [("WORKFLOW_CANCELLED", None)]
    assert run.last[0].command_id == "c-9" and run.last[0].reason == "not needed"
    run.result("a", at=T0 + 2)

    assert kinds(run.last) == [("RESULT_IGNORED", "a")]
    assert run.last[0].reason == "the run cancelled" and run.last[0].task_id == "run-1.a.1"
    assert run.run.status is RunStatus.CANCELLED and run.run.ignored_results == 1
    assert run.run.stage("a").status is StageStatus.INTERRUPTED
    assert run.send(Tick(T0 + 10**9)) == []
    run.send(CancelRun("run-1", T0 + 3))
    assert kinds(run.last) == [("COMMAND_REJECTED", None)]


def test_the_same_trigger_twice_starts_one_run() -> None:
    spec = workflow(stage("a"))
    run_id = run_id_for_trigger(spec.workflow_id, "gitlab-event-42")
    assert run_id == run_id_for_trigger(spec.workflow_id, "gitlab-event-42")
    assert run_id != run_id_for_trigger("other-flow@1", "gitlab-event-42")
    run = Run(spec, run_id=run_id)

    assert run.send(StartRun(run_id, spec, T0 + 5, trigger_id="gitlab-event-42")) == []
    assert run.run.seq == 3


def test_a_result_for_an_older_attempt_is_ignored() -> None:
    run = Run(workflow(stage("a", timeout_s=1, retries=1, backoff=Backoff(initial_s=0))))
    run.send(Tick(T0 + 1000))
    assert kinds(run.last) == [
        ("STAGE_TIMED_OUT", "a"),
        ("STAGE_RETRYING", "a"),
        ("STAGE_DISPATCHED", "a"),
    ]
    before = run.run

    run.result("a", at=T0 + 1001, attempt=1)

    assert kinds(run.last) == [("RESULT_IGNORED", "a")]
    assert "stale: attempt 1" in (run.last[0].reason or "")
    assert run.run.stage("a") == before.stage("a")
    run.result("a", at=T0 + 1002, attempt=2)
    assert kinds(run.last) == [("STAGE_SUCCEEDED", "a"), ("WORKFLOW_SUCCEEDED", None)]
    run.result("a", at=T0 + 1003, attempt=2)  # delivered twice
    assert kinds(run.last) == [("RESULT_IGNORED", "a")]


def test_a_result_after_its_timeout_is_ignored_until_the_retry() -> None:
    run = Run(workflow(stage("a", timeout_s=1, retries=1, backoff=Backoff(initial_s=5))))
    run.send(Tick(T0 + 1000))
    run.result("a", at=T0 + 1500, attempt=1)
    assert kinds(run.last) == [("RESULT_IGNORED", "a")]
    assert "already failed or timed out" in (run.last[0].reason or "")


# -- remote agents -----------------------------------------------------------------------


REMOTE = "ossa://production/deployer"


@pytest.mark.parametrize(
    ("fallback", "last_seen", "topic", "agent"),
    [
        (True, T0 - 5_000, "bar.ossa.production.tasks.deployer", REMOTE),
        (True, T0 - 31_000, "bar.tasks.deployer", "deployer"),
        (True, None, "bar.tasks.deployer", "deployer"),
        (False, None, "bar.ossa.production.tasks.deployer", REMOTE),
    ],
    ids=["heard-from-remote", "remote-silent", "remote-never-seen", "no-fallback"],
)
def test_remote_stage_goes_to_its_network_or_falls_back_to_the_local_agent(
    fallback: bool, last_seen: int | None, topic: str, agent: str
) -> None:
    spec = workflow(stage("deploy", agent=REMOTE, fallback_local=fallback))
    remotes = Remotes({REMOTE: last_seen} if last_seen is not None else {})

    events = decide(None, StartRun("run-1", spec, T0), remotes=remotes)

    dispatched = events[-1]
    assert (dispatched.topic, dispatched.agent) == (topic, agent)
    assert task_for(dispatched) == (topic, task_for(dispatched)[1])
    assert task_for(dispatched)[1].agent == agent
    if agent == "deployer":
        assert "falling back to the local deployer" in (dispatched.reason or "")


# -- manual retry, inputs, commands, replay ----------------------------------------------


def test_manual_retry_resumes_a_failed_run_with_a_fresh_retry_budget() -> None:
    run = Run(
        workflow(
            stage("a"), stage("b", retries=1, backoff=Backoff(initial_s=0)), stage("c", "a", "b")
        )
    )
    run.result("b", TaskStatus.FAILED, at=T0 + 1, error=AgentError(code="x.bug", message="bug"))
    assert run.run.status is RunStatus.FAILED
    assert run.run.stage("a").status is StageStatus.INTERRUPTED

    run.send(RetryStage("run-1", "b", T0 + 100, command_id="c-1"))

    assert kinds(run.last) == [
        ("STAGE_RETRY_REQUESTED", "b"),
        ("STAGE_DISPATCHED", "b"),
        ("STAGE_READY", "a"),  # interrupted by the failure: dispatched again
        ("STAGE_DISPATCHED", "a"),
    ]
    assert run.run.status is RunStatus.RUNNING
    assert run.dispatch_of("a").task_id == "run-1.a.2"
    assert run.dispatch_of("b").task_id == "run-1.b.2"
    run.result("a", at=T0 + 101, attempt=1)  # the interrupted attempt answers late
    assert kinds(run.last) == [("RESULT_IGNORED", "a")]
    run.result("b", TaskStatus.FAILED, at=T0 + 102)
    assert kinds(run.last) == [("STAGE_RETRYING", "b"), ("STAGE_DISPATCHED", "b")]  # budget reset
    run.result("a", at=T0 + 103)
    run.result("b", at=T0 + 104)
    run.result("c", at=T0 + 105)
    assert run.run.status is RunStatus.SUCCEEDED
    run.send(RetryStage("run-1", "b", T0 + 106))
    assert kinds(run.last) == [("COMMAND_REJECTED", "b")]
    assert "the run succeeded" in (run.last[0].reason or "")


def test_manual_retry_of_a_stage_that_did_not_fail_is_rejected() -> None:
    run = Run(workflow(stage("a")))
    run.send(RetryStage("run-1", "a", T0 + 1))
    assert kinds(run.last) == [("COMMAND_REJECTED", "a")]
    assert "only a failed stage" in (run.last[0].reason or "")
    run.send(RetryStage("run-1", "nope", T0 + 1))
    assert "has no stage 'nope'" in (run.last[0].reason or "")


def test_workflow_inputs_reach_the_tasks_and_a_missing_one_fails_the_run() -> None:
    inputs = (InputSpec(name="issueId"), InputSpec(name="branch", required=False, default="main"))
    spec = workflow(stage("a", inputs=("issueId",)), inputs=inputs)

    run = Run(spec, issueId="123")
    _, task = task_for(run.last[-1])
    assert task.inputs == {"issueId": "123"}
    assert '"workflow_inputs":{"branch":"main","issueId":"123"}' in task.parameters_json

    failed = Run(spec)
    assert kinds(failed.last) == [("WORKFLOW_STARTED", None), ("WORKFLOW_FAILED", None)]
    assert failed.last[1].error_code == "roe.missing_input"
    assert "issueId" in (failed.last[1].reason or "")


def test_command_records_become_commands() -> None:
    spec = workflow(stage("a"))
    when = datetime(2024, 1, 1, tzinfo=UTC)
    record = WorkflowCommand(
        command_id="c-1",
        run_id="run-1",
        kind=WorkflowCommandKind.START,
        workflow_id=spec.workflow_id,
        spec_json=spec.model_dump_json(),
        inputs={"x": "1"},
        trigger_id="t-1",
        requested_at=when,
    )
    assert command_from_record(record, T0) == StartRun("run-1", spec, T0, {"x": "1"}, "t-1", "c-1")
    retry = record.model_copy(update={"kind": WorkflowCommandKind.RETRY_STAGE, "stage": "a"})
    assert command_from_record(retry, T0) == RetryStage("run-1", "a", T0, None, "c-1")
    with pytest.raises(ValueError, match="does not match"):
        command_from_record(record.model_copy(update={"workflow_id": "other@1"}), T0)


def test_task_ids_and_events_are_the_same_on_every_decision() -> None:
    spec = workflow(stage("a"), stage("b"))
    first = decide(None, StartRun("run-7", spec, T0))
    again = decide(None, StartRun("run-7", spec, T0))
    assert first == again
    assert [e.task_id for e in first if e.kind is K.STAGE_DISPATCHED] == ["run-7.a.1", "run-7.b.1"]


def test_fold_skips_duplicate_events_and_refuses_gaps() -> None:
    run = Run(workflow(stage("a"), stage("b", "a")))
    run.result("a", at=T0 + 1)
    log = run.log

    assert fold([*log[:3], *log[:3], *log[3:]]) == {"run-1": run.run}
    with pytest.raises(ReplayError, match="gap"):
        fold([*log[:2], *log[3:]])
    with pytest.raises(ReplayError, match="replayed from the start"):
        fold(log[1:])


# -- replay equals live: random workflows, random arrival orders -------------------------

OUTCOMES = ["ok"] * 5 + ["low", "fail", "fatal", "timeout"]


@st.composite
def workflows(draw: st.DrawFn) -> WorkflowSpec:
    """Random DAGs: 1-8 stages, dependencies pointing only to earlier stages."""
    count = draw(st.integers(1, 8))
    stages = []
    for i in range(count):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        ancestors_out = [f"out{d}" for d in deps]
        remote = draw(st.integers(0, 5)) == 0
        stages.append(
            StageSpec(
                name=f"s{i}",
                agent=f"ossa://net/agent{i}" if remote else f"agent{i % 3}",
                fallback_local=remote and draw(st.booleans()),
                dependencies=tuple(f"s{d}" for d in deps),
                inputs=tuple(ancestors_out) + (("ticket",) if draw(st.booleans()) else ()),
                outputs=(f"out{i}",),
                conditions=draw(st.sampled_from([(), ("score >= 50",)])),
                timeout_s=draw(st.sampled_from([None, 5.0, 20.0])),
                retries=draw(st.integers(0, 2)),
                backoff=Backoff(initial_s=draw(st.sampled_from([0.0, 1.0])), multiplier=2, max_s=8),
                on_failure=draw(st.sampled_from(["fail", "continue"])),
            )
        )
    return WorkflowSpec(name="Random Flow", version="1", stages=tuple(stages))


class Simulation:
    """Several runs driven live through the decider, with every event logged in order."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.clock = T0
        self.live: dict[str, RunState] = {}
        self.log: list[WorkflowEvent] = []
        self.answered: set[str] = set()

    def send(self, run_id: str, command: Command) -> None:
        remotes = Remotes(
            {"ossa://net/agent0": self.clock - self.data.draw(st.sampled_from([0, 40_000]))}
        )
        state = self.live.get(run_id)
        events = decide(state, command, remotes=remotes)
        assert decide(state, command, remotes=remotes) == events  # pure: same input, same output
        for event in events:
            self.live[run_id] = evolve(self.live.get(run_id), event)
        self.log.extend(events)

    def dispatched(self) -> list[WorkflowEvent]:
        return [e for e in self.log if e.kind is K.STAGE_DISPATCHED]

    def deliver(self, dispatched: WorkflowEvent) -> None:
        outcome = self.data.draw(st.sampled_from(OUTCOMES))
        score = 10.0 if outcome == "low" else 90.0
        status = {
            "timeout": TaskStatus.TIMED_OUT,
            "fail": TaskStatus.FAILED,
            "fatal": TaskStatus.FAILED,
        }
        error = AgentError(code="t.fatal", message="fatal") if outcome == "fatal" else None
        result = result_for(
            dispatched,
            status.get(outcome, TaskStatus.SUCCEEDED),
            metrics={"score": score},
            outputs={f"out{(dispatched.stage or 's0')[1:]}": f"artifact://{dispatched.task_id}"},
            error=error,
        )
        self.answered.add(dispatched.task_id or "")
        self.send(dispatched.run_id, RecordResult(result, self.clock))

    def random_step(self) -> None:
        self.clock += self.data.draw(st.integers(0, 8_000))
        action = self.data.draw(
            st.sampled_from(["result"] * 4 + ["tick", "duplicate", "cancel", "retry"])
        )
        run_ids = sorted(self.live)
        run_id = self.data.draw(st.sampled_from(run_ids))
        if action == "result":
            waiting = [e for e in self.dispatched() if e.task_id not in self.answered]
            if waiting:
                self.deliver(self.data.draw(st.sampled_from(waiting)))
        elif action == "duplicate" and self.answered:
            done = [e for e in self.dispatched() if e.task_id in self.answered]
            self.deliver(self.data.draw(st.sampled_from(done)))
        elif action == "tick":
            for rid in run_ids:
                self.send(rid, Tick(self.clock))
        elif action == "cancel" and self.data.draw(st.integers(0, 3)) == 0:
            self.send(run_id, CancelRun(run_id, self.clock))
        elif action == "retry":
            name = self.data.draw(st.sampled_from(sorted(self.live[run_id].stages)))
            self.send(run_id, RetryStage(run_id, name, self.clock))

    def drain(self) -> None:
        """Answer every current task and tick past every deadline until all runs end."""
        for _ in range(200):
            running = [s for s in self.live.values() if not s.done]
            if not running:
                return
            for state in running:
                for st_ in state.stages.values():
                    if st_.status is StageStatus.DISPATCHED and st_.task_id not in self.answered:
                        self.deliver(self.dispatch_event(st_.task_id or ""))
            wakeups = [w for s in self.live.values() if (w := next_wakeup(s)) is not None]
            self.clock = max([self.clock + 1, *wakeups])
            for rid in sorted(self.live):
                self.send(rid, Tick(self.clock))

    def dispatch_event(self, task_id: str) -> WorkflowEvent:
        return next(e for e in self.dispatched() if e.task_id == task_id)


def check_invariants(log: list[WorkflowEvent], live: Mapping[str, RunState]) -> None:
    per_run: dict[str, list[WorkflowEvent]] = {}
    for event in log:
        per_run.setdefault(event.run_id, []).append(event)
    for run_id, events in per_run.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert all(e.event_id == f"{run_id}:{e.seq}" for e in events)
        dispatches = Counter((e.stage, e.attempt) for e in events if e.kind is K.STAGE_DISPATCHED)
        assert max(dispatches.values(), default=1) == 1, dispatches
        ended = False
        for e in events:
            if e.kind in (K.WORKFLOW_SUCCEEDED, K.WORKFLOW_FAILED, K.WORKFLOW_CANCELLED):
                assert not ended
                ended = True
            elif e.kind is K.STAGE_RETRY_REQUESTED:
                ended = False
            elif ended:
                assert e.kind in (K.RESULT_IGNORED, K.COMMAND_REJECTED), e.kind
        assert ended == live[run_id].done


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(workflows(), min_size=1, max_size=3), data=st.data())
def test_replaying_the_events_rebuilds_the_live_state_of_every_run(
    specs: list[WorkflowSpec], data: st.DataObject
) -> None:
    sim = Simulation(data)
    for i, spec in enumerate(specs):
        sim.send(f"run-{i}", StartRun(f"run-{i}", spec, sim.clock, {"ticket": "T-1"}))
    for _ in range(data.draw(st.integers(0, 30))):
        sim.random_step()
    sim.drain()

    assert all(state.done for state in sim.live.values())
    assert fold(sim.log) == sim.live
    # and through the wire format, as the engine replays bar.roe.events
    assert fold(CODEC.decode(CODEC.encode(e)) for e in sim.log) == sim.live
    check_invariants(sim.log, sim.live)
