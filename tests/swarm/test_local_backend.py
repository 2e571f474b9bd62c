"""The local backend on real processes: memory limits, crash restarts, unhealthy replicas
replaced, and the CLI views of them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from buildkit.contracts.events import AgentHeartbeat, AgentResult, AgentTask, TaskStatus
from buildkit.contracts.swarm import ReplicaEvent, ReplicaEventKind
from buildkit.kafka import next_batch
from buildkit.serde import SerdeRegistry
from streams.swarm.controller import HealthSettings
from streams.swarm.policy import ScalingPolicy
from tests.agents.sample_agents import agent_catalog, read_topic, results_for
from tests.swarm.helpers import MANIFEST_PATH, running_swarm, send_tasks, wait_for

pytestmark = pytest.mark.stack

FIXED_TWO = ScalingPolicy(min_replicas=2, max_replicas=2, tasks_per_agent=5)


def lifecycle(settings, agent_type: str) -> list[ReplicaEvent]:
    return [
        e
        for e in read_topic(settings, "bar.swarm.replicas")
        if isinstance(e, ReplicaEvent) and e.agent_type == agent_type
    ]


def dead_letters(settings, agent_type: str) -> list[tuple[AgentTask, str]]:
    """The tasks on the agent group's dead-letter topic, with their ``dlq_error``."""
    topic = f"bar.dlq.bar-agent-{agent_type}"
    serde = SerdeRegistry(settings, agent_catalog(agent_type)).for_topic(f"bar.tasks.{agent_type}")
    consumer = Consumer(settings.kafka_config(**{"group.id": "tests-dlq", "log_level": 0}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    letters = []
    for msg in next_batch(consumer, 100, 10):
        if msg.error() is None:
            headers = dict(msg.headers() or [])
            letters.append((serde.decode(msg.value()), headers["dlq_error"].decode()))
    consumer.close()
    return letters


def small_manifest(tmp_path: Path, memory_limit: str) -> Path:
    text = MANIFEST_PATH.read_text()
    text = text.replace("memory: 1Gi", "memory: 128Mi").replace(
        "memory: 2Gi", f"memory: {memory_limit}"
    )
    path = tmp_path / "hog.yaml"
    path.write_text(text)
    return path


@pytest.mark.timeout(300)
def test_a_replica_over_its_memory_limit_is_killed_reported_and_restarted(
    settings, prefix, tmp_path
):
    agent_type = f"{prefix}-hog"
    manifest = small_manifest(tmp_path, "300Mi")
    with running_swarm(
        settings,
        agent_type,
        FIXED_TWO,
        log_dir=tmp_path / "logs",
        agent_class="HogAgent",
        manifest_path=manifest,
    ) as swarm:
        assert wait_for(lambda: len(swarm.backend.live_replicas(agent_type)) == 2, 30)
        send_tasks(settings, agent_type, [(f"{prefix}-hog", {"mb": 600, "hold_s": 20})])

        def killed() -> list[ReplicaEvent]:
            return [
                e
                for e in lifecycle(settings, agent_type)
                if e.kind == ReplicaEventKind.MEMORY_KILLED
            ]

        assert wait_for(lambda: bool(killed()), 90, interval=1)
        event = killed()[0]
        assert event.memory_limit_bytes == 300 * 1024 * 1024
        assert event.memory_bytes is not None and event.memory_bytes > event.memory_limit_bytes
        assert "exceeded the limit" in event.reason
        # Restarted: a new replica id started after the kill, and two run again.
        assert wait_for(
            lambda: any(
                e.kind == ReplicaEventKind.STARTED and e.restarts >= 1
                for e in lifecycle(settings, agent_type)
            ),
            30,
        )
        assert wait_for(lambda: swarm.replicas(agent_type) == 2, 30)

        # The task kills whoever runs it: after BAR_DLQ_MAX_ATTEMPTS (3) replicas died
        # on it, the next owner answers it as poison and dead-letters it.
        def poisoned() -> list[AgentResult]:
            return [
                r
                for r in results_for(settings, {f"{prefix}-hog"})
                if r.error is not None and r.error.code == "agent.poison_task"
            ]

        assert wait_for(lambda: bool(poisoned()), 150, interval=2), [
            (e.kind.value, e.replica_id) for e in lifecycle(settings, agent_type)
        ]
        (result,) = poisoned()
        assert result.status == TaskStatus.FAILED and not result.error.retryable
        assert "3 replica(s)" in result.error.message
        assert len(killed()) >= 3
        letters = dead_letters(settings, agent_type)
        assert [(task.task_id, "never answered" in why) for task, why in letters] == [
            (f"{prefix}-hog", True)
        ]
        kills = len(killed())
        assert wait_for(lambda: len(swarm.backend.live_replicas(agent_type)) == 2, 30)
        time.sleep(3)
        assert len(killed()) == kills  # no crash loop any more


@pytest.mark.timeout(240)
def test_a_crashed_replica_is_reported_with_its_exit_code_and_restarted(settings, prefix, tmp_path):
    agent_type = f"{prefix}-crash"
    with running_swarm(settings, agent_type, FIXED_TWO, log_dir=tmp_path / "logs") as swarm:
        assert wait_for(lambda: len(swarm.backend.live_replicas(agent_type)) == 2, 30)
        victim = sorted(swarm.backend.live_replicas(agent_type))[0]
        pid = swarm.backend.pid(agent_type, victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def crashed() -> list[ReplicaEvent]:
            return [
                e
                for e in lifecycle(settings, agent_type)
                if e.kind == ReplicaEventKind.CRASHED and e.replica_id == victim
            ]

        assert wait_for(lambda: bool(crashed()), 30)
        assert crashed()[0].exit_code == -signal.SIGKILL
        assert wait_for(
            lambda: (
                len(swarm.backend.live_replicas(agent_type)) == 2
                and victim not in swarm.backend.live_replicas(agent_type)
            ),
            30,
        )


@pytest.mark.timeout(240)
def test_a_replica_that_stops_heartbeating_is_marked_unhealthy_and_replaced(
    settings, prefix, tmp_path, cli
):
    agent_type = f"{prefix}-hang"
    health = HealthSettings(health_check_interval_s=0.5, failure_threshold=3, startup_grace_s=60)
    with running_swarm(
        settings,
        agent_type,
        FIXED_TWO,
        log_dir=tmp_path / "logs",
        health=health,
        heartbeat_interval_s=0.3,
    ) as swarm:

        def beating() -> set[str]:
            return {
                e.replica_id
                for e in read_topic(settings, "bar.agents.heartbeats")
                if isinstance(e, AgentHeartbeat) and e.agent == agent_type
            }

        assert wait_for(lambda: len(beating()) == 2, 45, interval=0.5)
        victim = sorted(swarm.backend.live_replicas(agent_type))[0]
        pid = swarm.backend.pid(agent_type, victim)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive to the OS, silent to Kafka: a hung replica

        def unhealthy() -> list[ReplicaEvent]:
            return [
                e
                for e in lifecycle(settings, agent_type)
                if e.kind == ReplicaEventKind.UNHEALTHY and e.replica_id == victim
            ]

        assert wait_for(lambda: bool(unhealthy()), 30, interval=0.5)
        assert "failureThreshold 3" in unhealthy()[0].reason
        assert wait_for(
            lambda: (
                victim not in swarm.backend.live_replicas(agent_type)
                and len(swarm.backend.live_replicas(agent_type)) == 2
            ),
            15,
        )
        replacement = [
            e
            for e in lifecycle(settings, agent_type)
            if e.kind == ReplicaEventKind.STARTED and f"replaces {victim}" in e.reason
        ]
        assert replacement
        assert wait_for(lambda: replacement[0].replica_id in beating(), 45, interval=0.5)

        # The CLI sees the same: the replacement healthy; the victim failed.
        shown = cli(
            "swarm",
            "health",
            "--agent-type",
            agent_type,
            "--health-interval",
            "0.5",
            "--include-stopped",
            "--json",
        )
        rows = {r["replica_id"]: r for r in map(json.loads, shown.stdout.splitlines())}
        assert rows[victim]["status"] == "failed", shown
        assert rows[replacement[0].replica_id]["status"] == "healthy", shown
