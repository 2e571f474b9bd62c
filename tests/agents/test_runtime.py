"""The agent SDK core: execute() outcomes through the test helper, and the Kafka runner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.runtime.agent import ActionRequest, Agent, AgentFault, TaskOutcome
from agents.runtime.manifest import (
    AgentManifest,
    ManifestError,
    builtin_manifests_dir,
    load_manifest,
)
from agents.runtime.runner import HEARTBEATS_TOPIC, REGISTRY_TOPIC, AgentRunner
from agents.runtime.serve import load_agent, rename_manifest
from agents.runtime.testing import AgentTestContext
from buildkit.catalog import AGENT_TASK_PARTITIONS
from buildkit.contracts.events import (
    ActionKind,
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentResult,
    AgentTask,
    GitLabAction,
    ReplicaState,
    TaskStatus,
)
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from tests.agents.sample_agents import (
    SleepyAgent,
    TopicReader,
    agent_catalog,
    create_task_topic,
    read_topic,
    results_for,
    sample_tasks,
    serve_command,
)
from tests.conftest import settings_env

MANIFEST_PATH = builtin_manifests_dir() / "test-generator.yaml"
MANIFEST = load_manifest(MANIFEST_PATH)
ROOT = Path(__file__).parent.parent.parent


NOTE = ActionRequest(kind=ActionKind.ISSUE_NOTE, project_id=7, target_iid=3, body="checked")
STATUS = ActionRequest(
    kind=ActionKind.COMMIT_STATUS, project_id=7, sha="abc123", state="failed", title="bar/x"
)


class ScriptedAgent(Agent):
    """Behaves as the task's ``parameters_json`` says; records every task it ran."""

    manifest = MANIFEST

    def __init__(self, manifest: AgentManifest | None = None) -> None:
        super().__init__(manifest)
        self.calls: list[str] = []

    async def handle(self, task: AgentTask) -> TaskOutcome:
        self.calls.append(task.task_id)
        mode = task.parameters_json
        if mode == '"fault"':
            raise AgentFault("qits.coverage_below_threshold", "coverage 61% < 80%", retryable=False)
        if mode == '"boom"':
            raise RuntimeError("disk on fire")
        if mode == '"slow"':
            await asyncio.sleep(1)
        if mode == '"act"':
            return TaskOutcome(actions=[NOTE, STATUS])
        if mode == '"violate"':
            raise AgentFault("governor.violation", "branch name", actions=[STATUS])
        return TaskOutcome(
            metrics={"coverage": 91.5}, outputs={"tests.zip": f"artifact://{task.task_id}"}
        )


def run(ctx: AgentTestContext, **fields: object) -> AgentResult:
    return asyncio.run(ctx.run(**fields))


def test_success_carries_metrics_outputs_and_task_identity() -> None:
    ctx = AgentTestContext(ScriptedAgent())
    result = run(ctx, task_id="a-1", run_id="r-1", stage="test-generation", attempt=2)
    assert result.status is TaskStatus.SUCCEEDED
    assert result.error is None
    assert result.metrics == {"coverage": 91.5}
    assert result.outputs == {"tests.zip": "artifact://a-1"}
    assert (result.task_id, result.agent, result.run_id, result.stage, result.attempt) == (
        "a-1",
        "test-generator",
        "r-1",
        "test-generation",
        2,
    )
    assert result.started_at.microsecond % 1000 == 0
    assert result.started_at <= result.finished_at


def test_agent_fault_keeps_its_code_and_retryable_flag() -> None:
    result = run(AgentTestContext(ScriptedAgent()), parameters_json='"fault"')
    assert result.status is TaskStatus.FAILED
    assert result.error is not None
    assert result.error.code == "qits.coverage_below_threshold"
    assert result.error.message == "coverage 61% < 80%"
    assert result.error.retryable is False
    assert result.metrics == {}


def test_unexpected_exception_is_a_retryable_unhandled_failure() -> None:
    result = run(AgentTestContext(ScriptedAgent()), parameters_json='"boom"')
    assert result.status is TaskStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.retryable) == (
        "agent.unhandled_exception",
        "disk on fire",
        True,
    )


def test_task_past_its_timeout_is_timed_out() -> None:
    started = datetime.now(UTC)
    result = run(AgentTestContext(ScriptedAgent()), parameters_json='"slow"', timeout_ms=50)
    assert (datetime.now(UTC) - started).total_seconds() < 0.9
    assert result.status is TaskStatus.TIMED_OUT
    assert result.error is not None
    assert (result.error.code, result.error.retryable) == ("agent.timeout", True)


def test_default_timeout_applies_when_the_task_sets_none() -> None:
    ctx = AgentTestContext(ScriptedAgent(), default_timeout_s=0.05)
    result = run(ctx, parameters_json='"slow"')
    assert result.status is TaskStatus.TIMED_OUT


def test_actions_asked_for_become_gitlab_actions_with_ids_stable_per_attempt() -> None:
    ctx = AgentTestContext(ScriptedAgent())
    first = run(ctx, task_id="t-1", run_id="r-9", parameters_json='"act"')
    again = run(ctx, task_id="t-1", run_id="r-9", parameters_json='"act"')
    retry = run(ctx, task_id="t-1", run_id="r-9", parameters_json='"act"', attempt=2)

    assert first.status is TaskStatus.SUCCEEDED
    note, status = ctx.actions[:2]
    assert (note.kind, note.project_id, note.target_iid, note.body) == (
        ActionKind.ISSUE_NOTE,
        7,
        3,
        "checked",
    )
    assert (status.kind, status.sha, status.state) == (ActionKind.COMMIT_STATUS, "abc123", "failed")
    assert {a.requested_by for a in ctx.actions} == {"test-generator"}
    assert {a.run_id for a in ctx.actions} == {"r-9"}
    assert note.action_id != status.action_id
    # A redelivered attempt asks for the very same actions; a new attempt for new ones.
    assert [a.action_id for a in ctx.actions[2:4]] == [note.action_id, status.action_id]
    assert not {a.action_id for a in ctx.actions[4:]} & {note.action_id, status.action_id}
    assert again.status is retry.status is TaskStatus.SUCCEEDED


def test_a_fault_still_takes_its_actions() -> None:
    ctx = AgentTestContext(ScriptedAgent())
    result = run(ctx, parameters_json='"violate"')
    assert result.status is TaskStatus.FAILED
    assert result.error is not None and result.error.code == "governor.violation"
    assert [a.kind for a in ctx.actions] == [ActionKind.COMMIT_STATUS]


def test_an_unexpected_exception_takes_no_actions() -> None:
    ctx = AgentTestContext(ScriptedAgent())
    run(ctx, parameters_json='"boom"')
    assert ctx.actions == []


def test_agent_without_manifest_is_refused() -> None:
    class Nameless(Agent):
        pass

    with pytest.raises(TypeError, match="no manifest"):
        Nameless()


@pytest.mark.stack
def test_runner_answers_each_task_once_and_skips_a_redelivered_task(
    settings: Settings, prefix: str
) -> None:
    name = f"{prefix}-scripted"
    topic = create_task_topic(settings, name)
    agent = ScriptedAgent(rename_manifest(MANIFEST, name))
    now = datetime.now(UTC).replace(microsecond=0)
    tasks = [AgentTask(task_id=f"{prefix}-task-{n}", agent=name, created_at=now) for n in range(5)]
    with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
        for task in [*tasks, tasks[0]]:  # the last one is a redelivery of the first
            producer.produce(topic, task, key=task.task_id)

    replica = f"{prefix}-replica"
    runner = AgentRunner(settings, agent, replica_id=replica, heartbeat_interval_s=0.5)
    stats = runner.run(max_tasks=6, idle_timeout_s=20)

    assert sorted(agent.calls) == sorted(t.task_id for t in tasks)
    assert stats.duplicates == 1
    results = results_for(settings, {t.task_id for t in tasks})
    assert sorted(r.task_id for r in results) == sorted(t.task_id for t in tasks)
    assert all(r.status is TaskStatus.SUCCEEDED for r in results)
    assert all(r.replica_id == replica for r in results)

    registrations = [
        r
        for r in read_topic(settings, REGISTRY_TOPIC)
        if isinstance(r, AgentRegistration) and r.agent_id == replica
    ]
    assert [r.active for r in registrations] == [True, False]
    assert all(r.kind is AgentKind.WORKER and r.name == name for r in registrations)
    beats = _beats_of(settings, replica)
    assert beats, "no heartbeat for this replica"
    assert beats[0].state is ReplicaState.STARTING
    assert beats[-1].state is ReplicaState.DRAINING
    assert all(b.memory_bytes > 0 and b.agent == name for b in beats)


@pytest.mark.stack
def test_runner_publishes_the_actions_of_a_task_with_its_result(
    settings: Settings, prefix: str
) -> None:
    name = f"{prefix}-acting"
    topic = create_task_topic(settings, name)
    agent = ScriptedAgent(rename_manifest(MANIFEST, name))
    now = datetime.now(UTC).replace(microsecond=0)
    acting = AgentTask(
        task_id=f"{prefix}-act", agent=name, run_id=f"{prefix}-run", created_at=now,
        parameters_json='"act"',
    )  # fmt: skip
    failing = acting.model_copy(
        update={"task_id": f"{prefix}-violate", "parameters_json": '"violate"'}
    )
    with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
        for task in (acting, failing):
            producer.produce(topic, task, key=task.task_id)

    AgentRunner(settings, agent, replica_id=f"{prefix}-r", heartbeat_interval_s=0.5).run(
        max_tasks=2, idle_timeout_s=20
    )

    actions = [
        a
        for a in read_topic(settings, "bar.gitlab.actions")
        if isinstance(a, GitLabAction) and a.requested_by == name
    ]
    assert sorted((a.kind, a.run_id) for a in actions) == [
        (ActionKind.COMMIT_STATUS, f"{prefix}-run"),
        (ActionKind.COMMIT_STATUS, f"{prefix}-run"),
        (ActionKind.ISSUE_NOTE, f"{prefix}-run"),
    ]
    results = {r.task_id: r for r in results_for(settings, [acting.task_id, failing.task_id])}
    assert results[acting.task_id].status is TaskStatus.SUCCEEDED
    assert results[failing.task_id].status is TaskStatus.FAILED


def _beats_of(settings: Settings, replica_id: str) -> list[AgentHeartbeat]:
    return [
        b
        for b in read_topic(settings, HEARTBEATS_TOPIC)
        if isinstance(b, AgentHeartbeat) and b.replica_id == replica_id
    ]


@pytest.mark.stack
def test_heartbeats_carry_assigned_partitions_and_the_backlog_waiting_in_them(
    settings: Settings, prefix: str
) -> None:
    name = f"{prefix}-sleepy"
    topic = create_task_topic(settings, name)
    tasks = sample_tasks(name, [f"{prefix}-task-{n}" for n in range(6)], sleep_s=0.3)
    with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
        for task in tasks:
            producer.produce(topic, task, key=task.task_id)
    replica = f"{prefix}-replica"
    runner = AgentRunner(
        settings, SleepyAgent(name=name), replica_id=replica, heartbeat_interval_s=0.1
    )
    runner.run(max_tasks=len(tasks), idle_timeout_s=30)

    beats = _beats_of(settings, replica)
    running = [b for b in beats if b.state is ReplicaState.RUNNING]
    assert running, "no heartbeat while a task ran"
    # One replica alone in its group owns every partition of its task topic.
    assert all(b.partitions == list(range(AGENT_TASK_PARTITIONS)) for b in running)
    # While the first tasks ran, the others waited (the task in flight is not counted);
    # a beat reports what the consumer knew at its latest poll, so the first may say 0.
    assert 1 <= max(b.backlog for b in running) <= len(tasks) - 1
    assert running[-1].backlog == 0
    assert beats[-1].state is ReplicaState.DRAINING
    assert beats[-1].backlog == 0


# -- python -m agents.runtime.serve -----------------------------------------------------


def _serve(
    settings: Settings | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run serve to its end; without ``settings`` it must fail before reaching Kafka."""
    return subprocess.run(
        [sys.executable, "-m", "agents.runtime.serve", *args],
        cwd=ROOT,
        env=settings_env(settings) if settings is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.stack
def test_serve_finishes_the_task_in_flight_on_sigterm_and_registers_inactive(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    name = f"{prefix}-sleepy"
    topic = create_task_topic(settings, name)
    replica = f"{prefix}-replica"
    [task] = sample_tasks(name, [f"{prefix}-slow"], sleep_s=1.5)
    beats = TopicReader(settings, HEARTBEATS_TOPIC, from_end=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        command = serve_command(
            "SleepyAgent", name, replica, manifest=str(MANIFEST_PATH), heartbeat_interval_s=0.1
        )
        at = command.index("--replica-id")
        del command[at : at + 2]  # the id comes from BAR_REPLICA_ID, as on Kubernetes
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**settings_env(settings), "BAR_REPLICA_ID": replica},
            stderr=out,
        )
    try:
        with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
            producer.produce(topic, task, key=task.task_id)
        deadline = time.monotonic() + 60
        while not any(
            isinstance(b, AgentHeartbeat)
            and b.replica_id == replica
            and b.state is ReplicaState.RUNNING
            for b in beats.read()
        ):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        beats.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, log.read_text()
    [result] = results_for(settings, {task.task_id})
    assert (result.status, result.replica_id) == (TaskStatus.SUCCEEDED, replica)
    registrations = [
        r
        for r in read_topic(settings, REGISTRY_TOPIC)
        if isinstance(r, AgentRegistration) and r.agent_id == replica
    ]
    assert [r.active for r in registrations] == [True, False]
    assert _beats_of(settings, replica)[-1].state is ReplicaState.DRAINING
    assert "SIGTERM" in log.read_text()


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("tests.agents.sample_agents:Nope", 'module "tests.agents.sample_agents" has no "Nope"'),
        ("tests.agents.no_such_module:EchoAgent", 'no module named "tests.agents.no_such_module"'),
        ("tests.agents.sample_agents:parameters", "is a function, not a subclass of"),
        ("sample_agents.EchoAgent", 'is not of the form "module.path:ClassName"'),
    ],
)
def test_serve_with_a_bad_entrypoint_exits_non_zero_with_a_clear_error(
    entrypoint: str, expected: str
) -> None:
    done = _serve(None, "--manifest", str(MANIFEST_PATH), "--entrypoint", entrypoint)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_without_any_entrypoint_says_where_to_give_one(tmp_path: Path) -> None:
    # The shipped manifests name their entry points; one written without it has none.
    path = tmp_path / "agent.yaml"
    path.write_text("manifest:\n  name: bare\n  type: worker\n")
    done = _serve(None, "--manifest", str(path))
    assert done.returncode == 2
    assert f'pass --entrypoint "module.path:ClassName" or set entrypoint in {path}' in (done.stderr)


def test_manifest_entrypoint_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("manifest:\n  name: x\n  type: worker\n  entrypoint: agent.Agent\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.problems == [
        (
            4,
            15,
            'field "entrypoint": "agent.Agent" is not an entry point: write '
            '"module.path:ClassName", e.g. "my_agents.coverage:CoverageAgent"',
        )
    ]
    done = _serve(None, "--manifest", str(path))
    assert done.returncode == 2
    assert f'{path}:4:15: field "entrypoint": "agent.Agent" is not an entry point' in done.stderr


def test_an_agent_next_to_its_manifest_is_loaded_from_the_manifest_entrypoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])  # load_agent puts the folder first
    monkeypatch.delitem(sys.modules, "word_counter_agent", raising=False)
    folder = tmp_path / "word_counter"
    folder.mkdir()
    (folder / "word_counter_agent.py").write_text(
        "from agents.runtime.agent import Agent, TaskOutcome\n\n"
        "class WordCounter(Agent):\n"
        "    async def handle(self, task):\n"
        "        return TaskOutcome()\n"
    )
    (folder / "manifest.yaml").write_text(
        "manifest:\n  name: word-counter\n  type: worker\n"
        "  entrypoint: word_counter_agent:WordCounter\n"
    )
    agent = load_agent(folder / "manifest.yaml", name="word-counter-2")
    assert type(agent).__name__ == "WordCounter"
    assert agent.name == "word-counter-2"
    assert agent.manifest.task_topic == "bar.tasks.word-counter-2"
    assert sys.path[0] == str(folder)
    sys.modules.pop("word_counter_agent", None)


@pytest.mark.stack
def test_serve_exits_non_zero_with_the_error_when_the_runner_fails(
    settings: Settings, prefix: str
) -> None:
    # No task topic was created for this name: the runner cannot start.
    done = _serve(
        settings, "--entrypoint", "tests.agents.sample_agents:EchoAgent", "--name", f"{prefix}-x"
    )
    assert done.returncode == 1
    assert f'topic "bar.tasks.{prefix}-x" does not exist' in done.stderr
    assert "buildkit topics apply" in done.stderr
