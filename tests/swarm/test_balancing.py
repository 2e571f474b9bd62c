"""SWARM load balancing: the least-loaded formula, and its effect on a skewed load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pydantic
import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.runtime.agent import Agent, TaskOutcome
from agents.runtime.manifest import builtin_manifests_dir, load_manifest
from agents.runtime.runner import RESULTS_TOPIC, AgentRunner
from buildkit.catalog import (
    AGENT_TASK_PARTITIONS,
    Catalog,
    TopicSpec,
    default_catalog,
    task_topic_name,
)
from buildkit.contracts.events import AgentHeartbeat, AgentResult, AgentTask, ReplicaState
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from streams.swarm.balancing import LoadBalancing, LoadView, ReplicaLoad, TaskDispatcher

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
AGENT = "test-generator"
LEAST_LOADED = LoadBalancing(strategy="least-loaded", healthCheckInterval=1000, failureThreshold=3)


def beat(
    replica: str,
    *,
    at_s: float = 0,
    partitions: tuple[int, ...] = (0,),
    in_flight: int = 0,
    backlog: int = 0,
    state: ReplicaState = ReplicaState.RUNNING,
    agent: str = AGENT,
) -> AgentHeartbeat:
    return AgentHeartbeat(
        agent=agent,
        replica_id=replica,
        state=state,
        in_flight=in_flight,
        backlog=backlog,
        partitions=list(partitions),
        sent_at=T0 + timedelta(seconds=at_s),
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def view(*beats: AgentHeartbeat, balancing: LoadBalancing = LEAST_LOADED) -> LoadView:
    found = LoadView(AGENT, balancing, partition_count=AGENT_TASK_PARTITIONS)
    for b in beats:
        found.observe(b)
    return found


def by_id(loads: list[ReplicaLoad]) -> dict[str, ReplicaLoad]:
    return {r.replica_id: r for r in loads}


# -- the setting -------------------------------------------------------------------


def test_set_load_balancing_takes_the_documents_camel_case_keys():
    balancing = LoadBalancing.model_validate(
        {"strategy": "least-loaded", "healthCheckInterval": 10000, "failureThreshold": 3}
    )
    assert balancing.strategy == "least-loaded"
    assert balancing.health_check_interval_ms == 10_000
    assert balancing.failure_threshold == 3
    assert balancing.stale_after == timedelta(seconds=30)


def test_load_balancing_takes_snake_case_and_defaults_to_partition_keying():
    assert LoadBalancing() == LoadBalancing(
        strategy="partition", health_check_interval_ms=10_000, failure_threshold=3
    )
    snake = LoadBalancing.model_validate(
        {"strategy": "least-loaded", "health_check_interval_ms": 500, "failure_threshold": 2}
    )
    assert snake.stale_after == timedelta(seconds=1)


@pytest.mark.parametrize(
    "raw",
    [
        {"strategy": "round-robin"},
        {"healthCheckInterval": 0},
        {"failureThreshold": 0},
        {"healthCheckIntervall": 100},
    ],
)
def test_load_balancing_refuses_unknown_strategies_keys_and_non_positive_values(raw):
    with pytest.raises(pydantic.ValidationError):
        LoadBalancing.model_validate(raw)


# -- the formula -------------------------------------------------------------------


def test_load_is_in_flight_plus_backlog_plus_tasks_sent_since_the_heartbeat():
    loads = view(
        beat("a", partitions=(0, 1), in_flight=1, backlog=4),
        beat("b", partitions=(2,), in_flight=0, backlog=2),
    )
    loads.record(2, at(0.5))  # after b's heartbeat: counts
    loads.record(2, at(0.5))
    loads.record(2, at(-0.5))  # before it: already in b's backlog
    loads.record(7, at(0.5))  # nobody's partition
    found = by_id(loads.loads(at(1)))
    assert (found["a"].in_flight, found["a"].backlog, found["a"].sent_since) == (1, 4, 0)
    assert found["a"].load == 5
    assert (found["b"].backlog, found["b"].sent_since, found["b"].load) == (2, 2, 4)
    assert [r.replica_id for r in loads.loads(at(1))] == ["b", "a"]


def test_least_loaded_replica_gets_the_task_on_one_of_its_partitions_round_robin():
    loads = view(
        beat("busy", partitions=(0, 1), in_flight=1, backlog=9),
        beat("idle", partitions=(5, 3, 4)),
    )
    partitions = []
    for n in range(3):
        choice = loads.choose(at(0.1 + n / 100))
        assert choice is not None
        assert choice[0].replica_id == "idle"
        partitions.append(choice[1])
    assert partitions == [3, 4, 5]


def test_a_burst_between_heartbeats_spreads_over_the_replicas():
    loads = view(beat("a", partitions=(0,)), beat("b", partitions=(1,)), beat("c", partitions=(2,)))
    chosen = Counter()
    for n in range(30):
        choice = loads.choose(at(0.001 * (n + 1)))
        assert choice is not None
        chosen[choice[0].replica_id] += 1
    assert chosen == {"a": 10, "b": 10, "c": 10}


def test_a_newer_heartbeat_replaces_what_was_counted_as_sent_since_the_older_one():
    loads = view(beat("a", partitions=(0,)), beat("b", partitions=(1,), backlog=1))
    for n in range(3):
        loads.record(0, at(0.1 + n / 10))
    assert by_id(loads.loads(at(0.5)))["a"].load == 3
    # a's next heartbeat, sent after those tasks, reports them as its backlog
    loads.observe(beat("a", at_s=0.45, partitions=(0,), in_flight=1, backlog=2))
    a = by_id(loads.loads(at(0.5)))["a"]
    assert (a.sent_since, a.load) == (0, 3)
    # an older heartbeat arriving late does not replace the newer one
    assert not loads.observe(beat("a", at_s=0.2, partitions=(0,)))
    assert by_id(loads.loads(at(0.5)))["a"].heartbeat_at == at(0.45)


def test_ties_go_to_the_replica_sent_fewest_tasks_then_to_the_lowest_id():
    loads = view(beat("b", partitions=(1,)), beat("a", partitions=(0,)))
    first = loads.choose(at(0.1))
    assert first is not None and first[0].replica_id == "a"
    # a's heartbeat now counts that task in its backlog; b reports the same load
    loads.observe(beat("a", at_s=0.2, partitions=(0,), backlog=1))
    loads.observe(beat("b", at_s=0.2, partitions=(1,), in_flight=1))
    second = loads.choose(at(0.3))
    assert second is not None and second[0].replica_id == "b"


def test_stale_and_draining_replicas_get_no_task():
    # stale after 1000 ms x 3 = 3 s
    loads = view(
        beat("old", at_s=0),
        beat("draining", at_s=9, state=ReplicaState.DRAINING),
        beat("fresh", at_s=8, partitions=(4,), in_flight=1, backlog=50),
    )
    assert [r.replica_id for r in loads.loads(at(3))] == ["old", "fresh"]  # 3 s: not yet stale
    assert [r.replica_id for r in loads.loads(at(10))] == ["fresh"]
    choice = loads.choose(at(10))
    assert choice is not None
    assert (choice[0].replica_id, choice[0].load, choice[1]) == ("fresh", 51, 4)


def test_other_agent_types_and_replicas_without_partitions_are_ignored():
    loads = view(
        beat("other", agent="doc-sync", partitions=(0,)),
        beat("unassigned", partitions=()),
        beat("beyond", partitions=(AGENT_TASK_PARTITIONS, -1)),
        beat("mixed", partitions=(2, AGENT_TASK_PARTITIONS + 3), backlog=3),
    )
    assert [(r.replica_id, r.partitions) for r in loads.loads(at(1))] == [("mixed", (2,))]


def test_no_live_replica_means_no_choice_so_the_dispatcher_falls_back_to_keying():
    assert view().choose(at(0)) is None
    loads = view(beat("gone", at_s=0), beat("leaving", at_s=5, state=ReplicaState.DRAINING))
    assert loads.pick(at(6)) is None
    assert loads.choose(at(6)) is None


# -- on the broker -----------------------------------------------------------------

MANIFEST = load_manifest(builtin_manifests_dir() / f"{AGENT}.yaml")
TASK_SECONDS = 0.2
HOT_FILE = "src/api/users.ts"


class SlowAgent(Agent):
    """Takes ``TASK_SECONDS`` per task, like an agent waiting on a tool."""

    async def handle(self, task: AgentTask) -> TaskOutcome:
        await asyncio.sleep(TASK_SECONDS)
        return TaskOutcome()


def own_task_topic(settings: Settings, name: str) -> None:
    apply_topics(settings, default_catalog())
    apply_topics(
        settings,
        Catalog(
            [
                TopicSpec(
                    task_topic_name(name),
                    AgentTask,
                    partitions=AGENT_TASK_PARTITIONS,
                    key_field="task_id",
                )
            ]
        ),
    )


def new_task(task_id: str, agent: str) -> AgentTask:
    now = datetime.now(UTC)
    return AgentTask(
        task_id=task_id,
        agent=agent,
        stage="test-generation",
        inputs={"file": HOT_FILE},
        created_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
    )


class ResultReader:
    """Reads ``bar.tasks.results`` from where it ended when the reader was made."""

    def __init__(self, settings: Settings) -> None:
        self.serde = SerdeRegistry(settings, default_catalog()).for_topic(RESULTS_TOPIC)
        self.consumer = Consumer(settings.kafka_config(**{"group.id": "unused", "log_level": 0}))
        md = self.consumer.list_topics(RESULTS_TOPIC, timeout=settings.client_timeout_s)
        starts = []
        for p in md.topics[RESULTS_TOPIC].partitions:
            # the high watermark is a lower bound of the end: nothing newer is skipped
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(RESULTS_TOPIC, p), timeout=settings.client_timeout_s
            )
            starts.append(TopicPartition(RESULTS_TOPIC, p, high))
        self.consumer.assign(starts)

    def wait_for(self, task_ids: set[str], timeout_s: float) -> dict[str, AgentResult]:
        found: dict[str, AgentResult] = {}
        deadline = time.monotonic() + timeout_s
        while set(found) != task_ids and time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            result = self.serde.decode(msg.value())
            if isinstance(result, AgentResult) and result.task_id in task_ids:
                found[result.task_id] = result
        missing = task_ids - set(found)
        assert not missing, f"{len(missing)} result(s) missing after {timeout_s}s"
        return found

    def close(self) -> None:
        self.consumer.close()


def wait_for_settled_group(dispatcher: TaskDispatcher, replicas: int, timeout_s: float) -> None:
    """Until ``replicas`` live replicas report disjoint partitions covering the topic."""
    deadline = time.monotonic() + timeout_s
    loads: list[ReplicaLoad] = []
    while time.monotonic() < deadline:
        loads = dispatcher.refresh(wait_s=0.2)
        owned = [p for r in loads for p in r.partitions]
        if len(loads) == replicas and sorted(owned) == list(range(AGENT_TASK_PARTITIONS)):
            return
    raise AssertionError(f"group did not settle in {timeout_s}s: {loads}")


def run_phase(
    dispatcher: TaskDispatcher, reader: ResultReader, task_ids: list[str], name: str
) -> tuple[float, Counter[str]]:
    """Dispatch every task keyed by one hot file; seconds until all results, per-replica counts."""
    started = time.monotonic()
    for task_id in task_ids:
        dispatcher.dispatch(new_task(task_id, name), key=HOT_FILE)
    dispatcher.flush()
    results = reader.wait_for(set(task_ids), timeout_s=20)
    elapsed = time.monotonic() - started
    return elapsed, Counter(r.replica_id or "?" for r in results.values())


@pytest.mark.stack
def test_least_loaded_without_live_replicas_falls_back_to_key_partitioning(
    settings: Settings, prefix: str
) -> None:
    name = f"lb-{prefix}"
    own_task_topic(settings, name)
    with TaskDispatcher(settings, name, LEAST_LOADED) as dispatcher:
        assert dispatcher.refresh() == []
        sent = dispatcher.dispatch(new_task(f"{prefix}-task", name), key=HOT_FILE)
    assert (sent.strategy, sent.partition, sent.replica_id, sent.key) == (
        "partition",
        None,
        None,
        HOT_FILE,
    )


@pytest.mark.stack
def test_least_loaded_evens_out_a_skewed_load_that_partition_keyed_dispatch_does_not(
    settings: Settings, prefix: str
) -> None:
    name = f"lb-{prefix}"
    own_task_topic(settings, name)
    manifest = MANIFEST.model_copy(update={"name": name})
    stop = threading.Event()
    failures: list[BaseException] = []

    def serve(runner: AgentRunner) -> None:
        try:
            runner.run(stop=stop)
        except BaseException as exc:
            failures.append(exc)

    runners = [
        AgentRunner(
            settings,
            SlowAgent(manifest),
            replica_id=f"{name}-r{i}",
            heartbeat_interval_s=0.2,
        )
        for i in range(3)
    ]
    threads = [threading.Thread(target=serve, args=(r,), daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    reader = ResultReader(settings)
    keyed = TaskDispatcher(settings, name)
    balanced = TaskDispatcher(settings, name, LEAST_LOADED)
    try:
        wait_for_settled_group(balanced, replicas=3, timeout_s=30)

        keyed_s, keyed_counts = run_phase(
            keyed, reader, [f"{prefix}-keyed-{n}" for n in range(30)], name
        )
        balanced_s, balanced_counts = run_phase(
            balanced, reader, [f"{prefix}-balanced-{n}" for n in range(30)], name
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        keyed.close()
        balanced.close()
        reader.close()
    assert not failures, failures
    replicas = {r.replica_id for r in runners}
    # partition keying: one hot key, one partition, one replica does all the work
    assert len(keyed_counts) == 1 and set(keyed_counts) <= replicas, keyed_counts
    # least-loaded: every replica gets a fair share, and the work ends sooner
    assert set(balanced_counts) == replicas, balanced_counts
    assert min(balanced_counts.values()) >= 5, balanced_counts
    assert balanced_s < keyed_s * 0.7, (balanced_s, keyed_s)
    assert keyed_s >= 30 * TASK_SECONDS
