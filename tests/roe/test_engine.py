"""The ROE engine on the real broker: runs go stage by stage, exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from buildkit.catalog import default_catalog
from buildkit.contracts.roe import WorkflowCommand, WorkflowCommandKind
from buildkit.producer import TypedProducer
from buildkit.topics import apply_topics
from streams.roe.engine import RoeEngine
from streams.roe.spec import builtin_workflows, load_workflow
from tests.roe.agents import StandInAgents, running, wait_for

FEATURE = load_workflow(builtin_workflows()[0])
AGENTS = [s.agent for s in FEATURE.stages]


@pytest.fixture(scope="module")
def topics(settings):
    apply_topics(settings, default_catalog())


def start_command(run_id: str, inputs: dict[str, str] | None = None) -> WorkflowCommand:
    return WorkflowCommand(
        command_id=f"cmd-{run_id}",
        run_id=run_id,
        kind=WorkflowCommandKind.START,
        workflow_id=FEATURE.workflow_id,
        spec_json=FEATURE.model_dump_json(),
        inputs=inputs or {},
        requested_at=datetime.now(UTC).replace(microsecond=0),
    )


def test_feature_workflow_runs_stage_by_stage_passing_artifact_references(settings, topics):
    agents = StandInAgents(settings, AGENTS)
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    with running(settings, agents, workflows=[FEATURE]) as engine:
        with TypedProducer(settings) as producer:
            producer.produce(
                "bar.roe.commands", start_command(run_id, {"issueId": "123"}), key=run_id
            )
        assert wait_for(lambda: run_id in engine.runs and engine.runs[run_id].done, 60)
    state = engine.runs[run_id]
    assert state.status.value == "SUCCEEDED"
    tasks = [t for t in agents.received if t.run_id == run_id]
    assert [t.stage for t in tasks] == [s.name for s in FEATURE.stages]
    assert [t.task_id for t in tasks] == [f"{run_id}.{s.name}.1" for s in FEATURE.stages]
    by_stage = {t.stage: t for t in tasks}
    assert (
        by_stage["test-generation"].inputs["openapi-spec.yaml"]
        == f"artifact://{run_id}/api-design/openapi-spec.yaml"
    )
    assert (
        by_stage["implementation"].inputs["tests/"] == f"artifact://{run_id}/test-generation/tests/"
    )
    # A fresh engine rebuilds exactly the same state from bar.roe.events.
    fresh = RoeEngine(settings, workflows=[FEATURE], transactional_id="bar-roe-rebuild-check")
    try:
        fresh.rebuild()
    finally:
        fresh.close()
    assert fresh.runs[run_id] == state


def test_failing_gate_fails_the_run_naming_the_metric(settings, topics):
    agents = StandInAgents(settings, AGENTS, metrics={"coverage": 72.5, "phpcs violations": 0})
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    with running(settings, agents, workflows=[FEATURE]) as engine:
        with TypedProducer(settings) as producer:
            producer.produce("bar.roe.commands", start_command(run_id), key=run_id)
        assert wait_for(lambda: run_id in engine.runs and engine.runs[run_id].done, 60)
    state = engine.runs[run_id]
    assert state.status.value == "FAILED"
    assert "coverage 72.5 < 80" in (state.reason or "")


def test_aborted_transactions_stay_visible_on_the_embedded_broker(settings, prefix):
    """The broker fact the engine is designed around (see streams/roe/engine.py)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from buildkit.catalog import Catalog, TopicSpec

    topic = f"{prefix}.txn"
    apply_topics(settings, Catalog([TopicSpec(topic, None, partitions=1)]))
    producer = Producer(settings.kafka_config(**{"transactional.id": f"{prefix}-tx"}))
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic, b"committed")
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, b"aborted-after-send")
    producer.flush(10)
    producer.abort_transaction(10)
    reader = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"{prefix}-r",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    reader.assign([TopicPartition(topic, 0, 0)])
    seen = []
    while True:
        msg = reader.poll(5)
        assert msg is not None
        if msg.error():
            break
        seen.append(msg.value())
    reader.close()
    # A broker that hides aborted records would show only b"committed"; ROE is correct either way.
    assert seen[0] == b"committed" and set(seen) <= {b"committed", b"aborted-after-send"}


def test_the_same_gitlab_delivery_twice_starts_one_run_and_cron_starts_runs(settings, topics):
    import uuid
    from datetime import UTC, datetime, timedelta

    from connectors.gitlab import normalize
    from streams.roe.demo_gitlab import issue_delivery
    from streams.roe.model import StageSpec, TriggerSpec, WorkflowSpec
    from streams.roe.triggers import match_event

    cron_flow = WorkflowSpec(
        name="Nightly Metrics",
        version="1.0.0",
        trigger=(TriggerSpec(cron="* * * * *"),),
        stages=(StageSpec(name="collect", agent="metrics-collector"),),
    )
    agents = StandInAgents(settings, [*AGENTS, "metrics-collector"])
    delivery = normalize(
        "Issue Hook",
        issue_delivery(123, "Pet store API"),
        event_id=f"demo-{uuid.uuid4()}",
        received_at=datetime.now(UTC),
    )
    [match] = match_event([FEATURE], delivery)
    with running(
        settings, agents, workflows=[FEATURE, cron_flow], cron_lookback=timedelta(minutes=2)
    ) as engine:
        with TypedProducer(settings) as producer:
            producer.produce("bar.gitlab.events", delivery, key="4200")
            producer.produce("bar.gitlab.events", delivery, key="4200")  # GitLab retried it
        assert wait_for(lambda: match.run_id in engine.runs and engine.runs[match.run_id].done, 60)

        def cron_runs() -> list:
            return [s for s in engine.runs.values() if s.workflow_id == cron_flow.workflow_id]

        assert wait_for(lambda: any(s.done for s in cron_runs()), 60)
    state = engine.runs[match.run_id]
    assert state.status.value == "SUCCEEDED"
    assert state.inputs["gitlab.object_iid"] == "123"
    first_stage_tasks = [
        t for t in agents.received if t.run_id == match.run_id and t.stage == "api-design"
    ]
    assert len(first_stage_tasks) == 1
    assert all(s.trigger_id and s.trigger_id.startswith("cron:") for s in cron_runs())


def test_remote_stage_goes_to_its_network_or_falls_back_to_the_local_agent(settings, topics):
    from confluent_kafka import Consumer, TopicPartition

    from buildkit.catalog import Catalog, TopicSpec, remote_task_spec
    from buildkit.contracts.events import AgentHeartbeat, AgentTask, ReplicaState
    from streams.roe.model import StageSpec, WorkflowSpec

    def flow(network: str) -> WorkflowSpec:
        return WorkflowSpec(
            name=f"Deploy {network}",
            version="1.0.0",
            stages=(
                StageSpec(name="deploy", agent=f"ossa://{network}/deployer", fallback_local=True),
            ),
        )

    live, gone = flow("production"), flow("staging")
    apply_topics(
        settings,
        Catalog(
            [
                remote_task_spec("production", "deployer"),
                remote_task_spec("staging", "deployer"),
                TopicSpec("bar.tasks.deployer", AgentTask, partitions=1),
            ]
        ),
    )
    live_run, gone_run = f"run-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    with running(settings, None, remote_silence_ms=60_000) as engine:
        with TypedProducer(settings) as producer:
            beat = AgentHeartbeat(
                agent="ossa://production/deployer",
                replica_id="deployer-1",
                state=ReplicaState.RUNNING,
                sent_at=datetime.now(UTC).replace(microsecond=0),
            )
            producer.produce("bar.agents.heartbeats", beat, key="deployer-1")
            producer.flush()
            assert wait_for(lambda: "ossa://production/deployer" in engine.remote_seen, 30)
            for run_id, spec in ((live_run, live), (gone_run, gone)):
                command = start_command(run_id).model_copy(
                    update={"workflow_id": spec.workflow_id, "spec_json": spec.model_dump_json()}
                )
                producer.produce("bar.roe.commands", command, key=run_id)

        def dispatched(run_id: str) -> str | None:
            state = engine.runs.get(run_id)
            return None if state is None else state.stage("deploy").topic

        assert wait_for(lambda: dispatched(live_run) and dispatched(gone_run), 30)
    assert dispatched(live_run) == "bar.ossa.production.tasks.deployer"
    assert dispatched(gone_run) == "bar.tasks.deployer"
    reader = Consumer(settings.kafka_config(**{"group.id": "remote-check"}))
    reader.assign([TopicPartition("bar.ossa.production.tasks.deployer", p, 0) for p in range(6)])
    found = []
    while (msg := reader.poll(3)) is not None:
        if msg.error() is None:
            found.append(msg.key())
    reader.close()
    assert f"{live_run}.deploy.1".encode() in found


def test_silent_stage_times_out_is_retried_with_backoff_then_fails_the_run(settings, topics):
    from streams.roe.model import Backoff, StageSpec, WorkflowSpec

    spec = WorkflowSpec(
        name="Slow Docs",
        version="1.0.0",
        stages=(
            StageSpec(
                name="docs",
                agent="doc-sync",
                timeout_s=1.0,
                retries=1,
                backoff=Backoff(initial_s=0.5, multiplier=2.0, max_s=5.0),
            ),
        ),
    )
    agents = StandInAgents(settings, ["doc-sync"])
    agents.silent.add("docs")
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    with running(settings, agents) as engine:
        with TypedProducer(settings) as producer:
            command = start_command(run_id).model_copy(
                update={"workflow_id": spec.workflow_id, "spec_json": spec.model_dump_json()}
            )
            producer.produce("bar.roe.commands", command, key=run_id)
        assert wait_for(lambda: run_id in engine.runs and engine.runs[run_id].done, 30)
    state = engine.runs[run_id]
    assert state.status.value == "FAILED"
    assert state.stage("docs").attempt == 2
    tasks = [t.task_id for t in agents.received if t.run_id == run_id]
    assert tasks == [f"{run_id}.docs.1", f"{run_id}.docs.2"]


def test_a_start_for_an_agent_without_a_task_topic_is_dead_lettered_and_the_engine_goes_on(
    settings, topics
):
    from confluent_kafka import Consumer, TopicPartition

    from streams.roe.model import StageSpec, WorkflowSpec

    orphan = WorkflowSpec(
        name="Orphan", version="1.0.0", stages=(StageSpec(name="x", agent="no-such-agent"),)
    )
    agents = StandInAgents(settings, AGENTS)
    bad, good = f"run-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    with running(settings, agents) as engine:
        with TypedProducer(settings) as producer:
            command = start_command(bad).model_copy(
                update={"workflow_id": orphan.workflow_id, "spec_json": orphan.model_dump_json()}
            )
            producer.produce("bar.roe.commands", command, key=bad)
            producer.produce("bar.roe.commands", start_command(good), key=good)
        assert wait_for(lambda: good in engine.runs and engine.runs[good].done, 60)
    assert bad not in engine.runs and engine.stats.dead_letters >= 1
    reader = Consumer(settings.kafka_config(**{"group.id": "dlq-check"}))
    reader.assign([TopicPartition("bar.dlq.bar-roe", 0, 0)])
    errors = []
    while (msg := reader.poll(3)) is not None:
        if msg.error() is None and msg.key() == bad.encode():
            errors.append(dict(msg.headers())["dlq_error"].decode())
    reader.close()
    assert (
        errors and "bar.tasks.no-such-agent" in errors[0] and "buildkit topics apply" in errors[0]
    )
