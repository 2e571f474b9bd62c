"""De-duplication across replicas: a task with a result on bar.tasks.results is not run again."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.runtime.answered import AnsweredTasks
from agents.runtime.runner import HEARTBEATS_TOPIC, RESULTS_TOPIC, AgentRunner
from buildkit.contracts.events import AgentHeartbeat, AgentResult, TaskStatus
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from tests.agents.sample_agents import (
    EchoAgent,
    TopicReader,
    agent_catalog,
    create_task_topic,
    results_for,
    sample_tasks,
    serve_command,
)
from tests.conftest import settings_env

pytestmark = pytest.mark.stack

ROOT = Path(__file__).parent.parent.parent


def _result(task_id: str, agent: str, replica_id: str) -> AgentResult:
    now = datetime.now(UTC).replace(microsecond=0)
    return AgentResult(
        task_id=task_id,
        agent=agent,
        status=TaskStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
        replica_id=replica_id,
    )


def test_fresh_runner_skips_a_task_another_replica_answered(
    settings: Settings, prefix: str
) -> None:
    name = f"{prefix}-echo"
    topic = create_task_topic(settings, name)
    answered, fresh = sample_tasks(name, [f"{prefix}-answered", f"{prefix}-fresh"])
    with TypedProducer(settings) as producer:
        # Another replica ran it and crashed before committing: the task is still uncommitted.
        producer.produce(
            RESULTS_TOPIC, _result(answered.task_id, name, "dead"), key=answered.task_id
        )
    agent = EchoAgent(name=name)
    runner = AgentRunner(settings, agent, replica_id=f"{prefix}-r1", heartbeat_interval_s=0.5)
    with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
        for task in (answered, fresh):
            producer.produce(topic, task, key=task.task_id)
    stats = runner.run(max_tasks=2, idle_timeout_s=20)

    assert agent.calls == [fresh.task_id]
    assert (stats.executed, stats.duplicates) == (1, 1)
    results = results_for(settings, {answered.task_id, fresh.task_id})
    by_id = {r.task_id: r for r in results}
    assert len(results) == 2, [(r.task_id, r.replica_id) for r in results]
    assert by_id[answered.task_id].replica_id == "dead"
    assert by_id[fresh.task_id].replica_id == f"{prefix}-r1"


def test_replica_process_does_not_rerun_a_task_answered_before_it_started(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    name = f"{prefix}-echo"
    topic = create_task_topic(settings, name)
    answered, fresh = sample_tasks(name, [f"{prefix}-answered", f"{prefix}-fresh"])
    with TypedProducer(settings) as producer:
        producer.produce(
            RESULTS_TOPIC, _result(answered.task_id, name, "dead"), key=answered.task_id
        )
    with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
        for task in (answered, fresh):
            producer.produce(topic, task, key=task.task_id)
    log = tmp_path / "replica.log"
    with log.open("wb") as out:
        replica = subprocess.Popen(
            serve_command("EchoAgent", name, f"{prefix}-r1"),
            cwd=ROOT,
            env=settings_env(settings),
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 60
        while not results_for(settings, {fresh.task_id}):
            assert replica.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
    finally:
        replica.terminate()
        replica.wait(30)
    assert replica.returncode == 0, log.read_text()
    results = results_for(settings, {answered.task_id, fresh.task_id})
    assert sorted((r.task_id, r.replica_id) for r in results) == [
        (answered.task_id, "dead"),
        (fresh.task_id, f"{prefix}-r1"),
    ]
    assert f"task {answered.task_id} already answered" in log.read_text()


def test_catch_up_reads_every_result_acknowledged_before_the_call(
    settings: Settings, prefix: str
) -> None:
    create_task_topic(settings, f"{prefix}-echo")
    with AnsweredTasks(settings) as answered:
        answered.catch_up()
        ids = [f"{prefix}-{n}" for n in range(30)]
        with TypedProducer(settings) as producer:
            # Three batches in one partition: the embedded broker's ListOffsets end is then
            # the last batch's base + 1, short of the real end.
            for batch in range(3):
                for task_id in ids[batch * 10 : batch * 10 + 10]:
                    producer.produce(
                        RESULTS_TOPIC, _result(task_id, "x", "r"), key=task_id, partition=0
                    )
                producer.flush()
        assert not any(t in answered for t in ids)
        assert answered.catch_up() >= 30
        assert all(t in answered for t in ids)
        answered.add(f"{prefix}-own")
        assert f"{prefix}-own" in answered
        assert answered.catch_up() >= 0  # at the end already: returns at once


def test_lookback_bounds_what_is_read_on_start(settings: Settings, prefix: str) -> None:
    create_task_topic(settings, f"{prefix}-echo")
    ids = [f"{prefix}-{n}" for n in range(30)]
    with TypedProducer(settings) as producer:
        for batch in range(3):
            for task_id in ids[batch * 10 : batch * 10 + 10]:
                producer.produce(
                    RESULTS_TOPIC, _result(task_id, "x", "r"), key=task_id, partition=1
                )
            producer.flush()
    with AnsweredTasks(settings, lookback=5) as answered:
        answered.catch_up()
        assert all(t in answered for t in ids[-5:])  # at least the newest `lookback`
        assert not any(t in answered for t in ids[:10])  # nothing far older


def test_replica_catches_up_again_when_it_takes_over_a_partition(
    settings: Settings, prefix: str
) -> None:
    """The catch-up happens at every new assignment, not only on start: a result that
    the previous owner emitted after this replica started still stops the re-run."""
    name = f"{prefix}-echo"
    topic = create_task_topic(settings, name)
    stays, leaves = EchoAgent(name=name), EchoAgent(name=name)
    runners = {
        "stays": AgentRunner(
            settings, stays, replica_id=f"{prefix}-stays", heartbeat_interval_s=0.1
        ),
        "leaves": AgentRunner(
            settings, leaves, replica_id=f"{prefix}-leaves", heartbeat_interval_s=0.1
        ),
    }
    stops = {k: threading.Event() for k in runners}
    threads = {
        k: threading.Thread(target=r.run, kwargs={"stop": stops[k]}, daemon=True)
        for k, r in runners.items()
    }
    beats = TopicReader(settings, HEARTBEATS_TOPIC, from_end=True)
    owned: dict[str, list[int]] = {}

    def wait(what: str, predicate: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {owned}"
            time.sleep(0.1)

    def split() -> bool:
        for beat in beats.read():
            if isinstance(beat, AgentHeartbeat) and beat.replica_id.startswith(prefix):
                owned[beat.replica_id.removeprefix(f"{prefix}-")] = beat.partitions
        return len(owned) == 2 and all(owned.values()) and sum(map(len, owned.values())) == 24

    try:
        for thread in threads.values():
            thread.start()
        wait("both replicas to own partitions", split)
        # A first task makes the staying replica catch up once.
        [warm_up, task] = sample_tasks(name, [f"{prefix}-warm-up", f"{prefix}-taken-over"])
        catalog = agent_catalog(name)
        with TypedProducer(settings, catalog=catalog) as producer:
            producer.produce(topic, warm_up, key=warm_up.task_id, partition=owned["stays"][0])
        wait("the warm-up task", lambda: stays.calls == [warm_up.task_id])
        # The leaving replica answered a task of its partition; it leaves before committing.
        with TypedProducer(settings) as producer:
            producer.produce(RESULTS_TOPIC, _result(task.task_id, name, "leaves"), key=task.task_id)
        stops["leaves"].set()
        threads["leaves"].join(30)
        with TypedProducer(settings, catalog=catalog) as producer:
            producer.produce(topic, task, key=task.task_id, partition=owned["leaves"][0])
        wait(
            "the task to reach the staying replica",
            lambda: bool(runners["stays"].stats.duplicates) or task.task_id in stays.calls,
        )
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads.values():
            thread.join(30)
        beats.close()
    assert stays.calls == [warm_up.task_id]
    assert leaves.calls == []
    assert [r.replica_id for r in results_for(settings, {task.task_id})] == ["leaves"]
