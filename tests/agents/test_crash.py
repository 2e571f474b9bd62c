"""A replica killed mid-task under load: no task is lost and none is answered twice.

Three replica processes serve a SleepyAgent; one is SIGKILLed while it runs a task
with more waiting in its partitions. The survivors get its partitions once the
group gives up on it (the session timeout, 6 s in tests), catch up with
``bar.tasks.results`` and answer what it left, without re-running what it answered.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message

from agents.runtime.runner import HEARTBEATS_TOPIC
from buildkit.contracts.events import AgentHeartbeat, AgentResult, ReplicaState, TaskStatus
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from tests.agents.sample_agents import (
    TopicReader,
    agent_catalog,
    create_task_topic,
    results_for,
    sample_tasks,
    serve_command,
)
from tests.conftest import settings_env

ROOT = Path(__file__).parent.parent.parent
TASKS = 40
SLEEP_S = 0.2


def _wait(what: str, predicate, timeout_s: float, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


@pytest.mark.stack
def test_killing_a_replica_mid_task_loses_no_task_and_answers_none_twice(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    name = f"{prefix}-sleepy"
    topic = create_task_topic(settings, name)
    replica_ids = [f"{prefix}-r{n}" for n in range(3)]
    victim_id = replica_ids[0]
    logs = [tmp_path / f"{r}.log" for r in replica_ids]
    beats = TopicReader(settings, HEARTBEATS_TOPIC, from_end=True)
    latest: dict[str, AgentHeartbeat] = {}

    def follow() -> dict[str, AgentHeartbeat]:
        for beat in beats.read():
            if isinstance(beat, AgentHeartbeat) and beat.replica_id in replica_ids:
                latest[beat.replica_id] = beat
        return latest

    replicas: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for replica_id, log in zip(replica_ids, logs, strict=True):
            with log.open("wb") as out:
                replicas[replica_id] = subprocess.Popen(
                    serve_command("SleepyAgent", name, replica_id, heartbeat_interval_s=0.2),
                    cwd=ROOT,
                    env=settings_env(settings),
                    stderr=out,
                )
        # Load arrives once the group settled: every replica owns partitions.
        _wait(
            "all three replicas to own partitions",
            lambda: (
                len(follow()) == 3
                and sum(len(b.partitions) for b in latest.values()) == 24
                and all(b.partitions for b in latest.values())
            ),
            60,
            logs,
        )
        tasks = sample_tasks(name, [f"{prefix}-task-{n}" for n in range(TASKS)], sleep_s=SLEEP_S)
        partition_of: dict[str, int] = {}

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                partition_of[(msg.key() or b"").decode()] = msg.partition() or 0

        with TypedProducer(settings, catalog=agent_catalog(name)) as producer:
            for task in tasks:
                producer.produce(topic, task, key=task.task_id, on_delivery=delivered)

        def victim_busy_with_more_waiting() -> bool:
            beat = follow().get(victim_id)
            return (
                beat is not None
                and beat.state is ReplicaState.RUNNING
                and beat.in_flight == 1
                and beat.backlog >= 1
            )

        _wait("the victim to run a task with more waiting", victim_busy_with_more_waiting, 30, logs)
        replicas[victim_id].send_signal(signal.SIGKILL)
        replicas[victim_id].wait(10)
        victim_partitions = set(latest[victim_id].partitions)
        task_ids = {t.task_id for t in tasks}
        answered_at_kill = {r.task_id for r in results_for(settings, task_ids)}
        assert len(answered_at_kill) < TASKS

        _wait(
            "every task to have a result",
            lambda: {r.task_id for r in results_for(settings, task_ids)} == task_ids,
            90,
            logs,
        )
        survivors = [replicas[r] for r in replica_ids[1:]]
        for proc in survivors:
            proc.send_signal(signal.SIGTERM)
        for proc in survivors:
            proc.wait(30)
            assert proc.returncode == 0, "\n".join(p.read_text()[-3000:] for p in logs)
    finally:
        beats.close()
        for proc in replicas.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    results = results_for(settings, task_ids)  # every replica has stopped: this is final
    counts = Counter(r.task_id for r in results)
    assert set(counts) == task_ids, f"lost: {sorted(task_ids - set(counts))}"
    assert [t for t, n in counts.items() if n > 1] == [], "answered twice"
    assert all(isinstance(r, AgentResult) and r.status is TaskStatus.SUCCEEDED for r in results)
    assert {r.task_id for r in results if r.replica_id == victim_id} <= answered_at_kill
    # What the victim left in its partitions was answered by the survivors.
    taken_over = [
        r
        for r in results
        if partition_of[r.task_id] in victim_partitions and r.replica_id != victim_id
    ]
    assert taken_over, "no task of the killed replica's partitions was answered by a survivor"
