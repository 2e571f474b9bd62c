"""The architecture document's scaling example, as written, on real processes:

    swarm.createTasks({tasks, scaling: {minAgents: 2, maxAgents: 20, tasksPerAgent: 5}})
    // SWARM spawns 20 agents (100 tasks / 5 per agent)
    // As tasks complete, SWARM scales down to minAgents

Cool-downs are short so the test runs in about a minute.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from buildkit.contracts.events import AgentResult, TaskStatus
from buildkit.contracts.swarm import ReplicaEvent, ReplicaEventKind, ScalingDecisionEvent
from streams.swarm.policy import ScalingPolicy
from tests.agents.sample_agents import read_topic
from tests.swarm.helpers import peak_desired, running_swarm, send_tasks, wait_for

pytestmark = pytest.mark.stack


@pytest.mark.timeout(420)
def test_100_tasks_scale_to_20_replicas_complete_once_and_scale_back_to_2(
    settings, prefix: str, tmp_path: Path
) -> None:
    agent_type = f"{prefix}-test-generator"
    policy = ScalingPolicy.model_validate(
        {
            "minAgents": 2,
            "maxAgents": 20,
            "tasksPerAgent": 5,
            "scaleUpCooldown": 2,
            "scaleDownCooldown": 8,
            "stabilizationWindow": 8,
        }
    )
    files = [f"src/api/resource_{n:03d}.ts" for n in range(100)]
    tasks = [(f"{prefix}-{n:03d}", {"file": path, "sleep_s": 1.0}) for n, path in enumerate(files)]

    with running_swarm(settings, agent_type, policy, log_dir=tmp_path / "replicas") as swarm:
        assert wait_for(lambda: swarm.replicas(agent_type) == 2, 30)
        send_tasks(settings, agent_type, tasks)

        assert wait_for(lambda: peak_desired(swarm) == 20, 60), (
            f"replica counts asked for: {sorted({d.desired for d in swarm.controller.decisions})}"
        )
        assert wait_for(lambda: swarm.replicas(agent_type) == 20, 10)

        def results() -> list[AgentResult]:
            ours = {task_id for task_id, _ in tasks}
            return [
                e
                for e in read_topic(settings, "bar.tasks.results")
                if isinstance(e, AgentResult) and e.task_id in ours
            ]

        assert wait_for(lambda: len({r.task_id for r in results()}) == 100, 180, interval=2)
        assert wait_for(lambda: swarm.replicas(agent_type) == 2, 90), (
            f"still {swarm.replicas(agent_type)} replicas"
        )

    # Exactly once: 100 distinct results, none twice, all succeeded.
    done = results()
    per_task = Counter(r.task_id for r in done)
    assert len(per_task) == 100
    assert [t for t, n in per_task.items() if n > 1] == []
    assert {r.status for r in done} == {TaskStatus.SUCCEEDED}
    # Work was spread: more replicas than the starting two produced results.
    assert len({r.replica_id for r in done}) > 2

    decisions = [
        e
        for e in read_topic(settings, "bar.swarm.decisions")
        if isinstance(e, ScalingDecisionEvent) and e.agent_type == agent_type
    ]
    up = [d for d in decisions if d.action.value == "UP"]
    assert up and up[0].desired_replicas == 20 and (up[0].lag or 0) >= 95
    assert "lag" in up[0].reason
    downs = [d for d in decisions if d.action.value == "DOWN"]
    assert downs and downs[-1].desired_replicas == 2

    lifecycle = [
        e
        for e in read_topic(settings, "bar.swarm.replicas")
        if isinstance(e, ReplicaEvent) and e.agent_type == agent_type
    ]
    started = {e.replica_id for e in lifecycle if e.kind == ReplicaEventKind.STARTED}
    stopped = {e.replica_id for e in lifecycle if e.kind == ReplicaEventKind.STOPPED}
    assert len(started) >= 20
    assert not [e for e in lifecycle if e.kind == ReplicaEventKind.CRASHED]
    assert len(stopped) >= 18  # scaled down cleanly (plus the last two at teardown)
