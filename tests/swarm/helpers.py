"""Shared pieces of the SWARM tests: a controller over real replica processes, task
production and reading results back by assignment."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from agents.runtime.manifest import builtin_manifests_dir
from buildkit.contracts.events import AgentTask
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from streams.swarm.api import Swarm
from streams.swarm.controller import HealthSettings
from streams.swarm.local import LocalBackend
from streams.swarm.policy import ScalingPolicy
from tests.agents.sample_agents import agent_catalog
from tests.conftest import settings_env

MANIFEST_PATH = builtin_manifests_dir() / "test-generator.yaml"
SAMPLE = "agents.samples"


def send_tasks(
    settings: Settings, agent_type: str, tasks: list[tuple[str, dict[str, object]]]
) -> None:
    """Produce ``(task id, parameters)`` tasks to ``bar.tasks.<agent_type>``, acknowledged."""
    catalog = agent_catalog(agent_type)
    producer = TypedProducer(settings, catalog=catalog, source="tests")
    now = datetime.now(UTC)
    for task_id, parameters in tasks:
        producer.produce(
            f"bar.tasks.{agent_type}",
            AgentTask(
                task_id=task_id,
                agent=agent_type,
                parameters_json=json.dumps(parameters),
                created_at=now,
            ),
            key=task_id,
        )
    producer.flush()


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextmanager
def running_swarm(
    settings: Settings,
    agent_type: str,
    policy: ScalingPolicy,
    *,
    log_dir: Path,
    agent_class: str = "SleepyAgent",
    health: HealthSettings | None = None,
    heartbeat_interval_s: float = 0.5,
    interval_s: float = 0.5,
    manifest_path: Path = MANIFEST_PATH,
) -> Iterator[Swarm]:
    """Deploy ``agent_class`` (from agents/samples.py) as ``agent_type`` on real local
    processes through the SWARM API and keep its controller stepping until the block ends."""
    backend = LocalBackend(
        env=settings_env(settings),
        heartbeat_interval_s=heartbeat_interval_s,
        log_dir=log_dir,
        stop_grace_s=15,
    )
    with Swarm(
        settings,
        backend,
        interval_s=interval_s,
        health=health or HealthSettings(1.0, 5, startup_grace_s=60),
    ) as swarm:
        swarm.spawn_agent(
            manifest_path,
            entrypoint=f"{SAMPLE}:{agent_class}",
            name=agent_type,
            scaling=policy,
        )
        yield swarm


def peak_desired(swarm: Swarm) -> int:
    """The most replicas the controller has asked for so far."""
    return max((d.desired for d in swarm.controller.decisions), default=0)
