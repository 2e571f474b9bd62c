"""The agent SDK core: execute() outcomes through the test helper, and the Kafka runner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.runtime.agent import Agent, AgentFault, TaskOutcome
from agents.runtime.manifest import builtin_manifests_dir, load_manifest
from agents.runtime.runner import HEARTBEATS_TOPIC, REGISTRY_TOPIC, RESULTS_TOPIC, AgentRunner
from agents.runtime.testing import AgentTestContext
from buildkit.catalog import default_catalog
from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentResult,
    AgentTask,
    Event,
    TaskStatus,
)
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics

MANIFEST = load_manifest(builtin_manifests_dir() / "test-generator.yaml")


class ScriptedAgent(Agent):
    """Behaves as the task's ``parameters_json`` says; records every task it ran."""

    manifest = MANIFEST

    def __init__(self) -> None:
        super().__init__()
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


def test_agent_without_manifest_is_refused() -> None:
    class Nameless(Agent):
        pass

    with pytest.raises(TypeError, match="no manifest"):
        Nameless()


def _records_on(settings: Settings, topic: str) -> int:
    consumer = Consumer(settings.kafka_config(**{"group.id": "unused", "log_level": 0}))
    try:
        md = consumer.list_topics(topic, timeout=settings.client_timeout_s)
        total = 0
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=settings.client_timeout_s
            )
            total += high - low
        return total
    finally:
        consumer.close()


def _read_results(settings: Settings, task_ids: set[str]) -> list[AgentResult]:
    found = _read_topic(settings, RESULTS_TOPIC)
    return [v for v in found if isinstance(v, AgentResult) and v.task_id in task_ids]


def _read_topic(settings: Settings, topic: str) -> list[Event]:
    """Every value currently on ``topic``, decoded."""
    serde = SerdeRegistry(settings, default_catalog()).for_topic(topic)
    consumer = Consumer(settings.kafka_config(**{"group.id": "unused", "log_level": 0}))
    try:
        md = consumer.list_topics(topic, timeout=settings.client_timeout_s)
        ends: dict[int, int] = {}
        assign = []
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=settings.client_timeout_s
            )
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        consumer.assign(assign)
        found: list[Event] = []
        positions = {p: 0 for p in ends}
        while any(positions[p] < ends[p] for p in ends):
            msg = consumer.poll(1)
            if msg is None or msg.error() is not None:
                continue
            positions[msg.partition() or 0] = (msg.offset() or 0) + 1
            found.append(serde.decode(msg.value()))
        return found
    finally:
        consumer.close()


@pytest.mark.stack
def test_runner_answers_each_task_once_and_skips_a_redelivered_task(
    settings: Settings, prefix: str
) -> None:
    apply_topics(settings, default_catalog())
    agent = ScriptedAgent()
    topic = MANIFEST.task_topic
    already = _records_on(settings, topic)  # other tests' tasks: a fresh group reads them too
    now = datetime.now(UTC).replace(microsecond=0)
    tasks = [
        AgentTask(task_id=f"{prefix}-task-{n}", agent=MANIFEST.name, created_at=now)
        for n in range(5)
    ]
    with TypedProducer(settings) as producer:
        for task in [*tasks, tasks[0]]:  # the last one is a redelivery of the first
            producer.produce(topic, task, key=task.task_id)

    replica = f"{prefix}-replica"
    runner = AgentRunner(
        settings,
        agent,
        group_id=f"{MANIFEST.group_id}-{prefix}",
        replica_id=replica,
        heartbeat_interval_s=0.5,
    )
    stats = runner.run(max_tasks=already + 6, idle_timeout_s=20)

    ours = [c for c in agent.calls if c.startswith(prefix)]
    assert sorted(ours) == sorted(t.task_id for t in tasks)
    assert stats.duplicates == 1
    results = _read_results(settings, {t.task_id for t in tasks})
    assert sorted(r.task_id for r in results) == sorted(t.task_id for t in tasks)
    assert all(r.status is TaskStatus.SUCCEEDED for r in results)

    registrations = [
        r
        for r in _read_topic(settings, REGISTRY_TOPIC)
        if isinstance(r, AgentRegistration) and r.agent_id == replica
    ]
    assert [r.active for r in registrations] == [True, False]
    assert all(r.kind is AgentKind.WORKER and r.name == MANIFEST.name for r in registrations)
    beats = [
        b
        for b in _read_topic(settings, HEARTBEATS_TOPIC)
        if isinstance(b, AgentHeartbeat) and b.replica_id == replica
    ]
    assert beats, "no heartbeat for this replica"
    assert beats[-1].state.value == "DRAINING"
    assert all(b.memory_bytes > 0 and b.agent == MANIFEST.name for b in beats)
