"""Realistic events for the demo: GitLab deliveries, agent registrations, tasks, results
and heartbeats of Feature Development Workflow runs. Deterministic for a given seed."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from buildkit.catalog import AGENTS
from buildkit.contracts.events import (
    AgentError,
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentResult,
    AgentTask,
    GitLabEvent,
    ReplicaState,
    TaskStatus,
)

#: The stages of the architecture document's Feature Development Workflow.
STAGES = (
    ("api-design", "api-first-enforcer"),
    ("test-generation", "test-generator"),
    ("implementation", "api-builder"),
    ("quality-gate", "quality-gate-enforcer"),
)
_KINDS = {
    "tdd-enforcer": AgentKind.GOVERNOR,
    "version-sync": AgentKind.GOVERNOR,
    "branch-policy": AgentKind.GOVERNOR,
    "api-first-enforcer": AgentKind.GOVERNOR,
    "quality-gate-enforcer": AgentKind.GOVERNOR,
    "security-auditor": AgentKind.CRITIC,
    "performance-monitor": AgentKind.CRITIC,
    "roadmap-tracker": AgentKind.OBSERVER,
    "metrics-collector": AgentKind.OBSERVER,
}


def _ms(stamp: datetime) -> datetime:
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


@dataclass
class DemoBatch:
    """Events of one demo phase, in the order they are sent, with their topics."""

    items: list[tuple[str, object]]

    def count(self, topic: str) -> int:
        """How many of the batch go to ``topic``."""
        return sum(1 for t, _ in self.items if t == topic)


def registrations(now: datetime) -> DemoBatch:
    """One registration per agent, on the compacted registry topic."""
    return DemoBatch(
        [
            (
                "bar.agents.registry",
                AgentRegistration(
                    agent_id=f"{agent}-001",
                    name=agent,
                    kind=_KINDS.get(agent, AgentKind.WORKER),
                    version="0.1.0",
                    capabilities=[agent.split("-")[0], "ossa-0.1.9"],
                    task_topic=f"bar.tasks.{agent}",
                    registered_at=_ms(now),
                ),
            )
            for agent in AGENTS
        ]
    )


def gitlab_events(now: datetime, runs: int, rng: random.Random) -> DemoBatch:
    """Issue, merge request, push and pipeline deliveries for ``runs`` features."""
    items: list[tuple[str, object]] = []
    for n in range(runs):
        project_id, iid = 4200 + n % 3, 100 + n
        path = f"platform/service-{n % 3}"
        at = _ms(now - timedelta(seconds=runs - n))
        author = rng.choice(["ada", "grace", "linus", "margaret"])
        for kind, action, extra in (
            ("issue", "open", {"labels": ["feature"]}),
            ("merge_request", "open", {"ref": f"feature/{iid}-users-api"}),
            ("push", None, {"ref": f"refs/heads/feature/{iid}-users-api"}),
            ("pipeline", rng.choice(["success", "failed"]), {"ref": f"feature/{iid}-users-api"}),
        ):
            raw = {
                "object_kind": kind,
                "project": {"id": project_id, "path_with_namespace": path},
                "object_attributes": {"iid": iid, "action": action, "title": f"Users API #{iid}"},
                "user": {"username": author},
            }
            items.append(
                (
                    "bar.gitlab.events",
                    GitLabEvent(
                        event_id=f"demo-{kind}-{n}-{rng.getrandbits(32):08x}",
                        kind=kind,
                        action=action,
                        project_id=project_id,
                        project_path=path,
                        object_id=900_000 + n,
                        object_iid=iid,
                        labels=list(extra.get("labels", ())),
                        author=author,
                        ref=str(extra["ref"]) if "ref" in extra else None,
                        occurred_at=at,
                        received_at=_ms(now),
                        raw_json=json.dumps(raw, separators=(",", ":")),
                    ),
                )
            )
    return DemoBatch(items)


def workflow_runs(now: datetime, runs: int, rng: random.Random) -> DemoBatch:
    """A task and its result for every stage of ``runs`` workflow runs (some fail the gate)."""
    items: list[tuple[str, object]] = []
    for n in range(runs):
        run_id = f"run-{n:04d}"
        started = _ms(now - timedelta(minutes=5))
        for index, (stage, agent) in enumerate(STAGES):
            task_id = f"{run_id}-{stage}-1"
            items.append(
                (
                    f"bar.tasks.{agent}",
                    AgentTask(
                        task_id=task_id,
                        agent=agent,
                        run_id=run_id,
                        stage=stage,
                        inputs={"openapi-spec.yaml": f"artifact://{run_id}/openapi-spec.yaml"},
                        parameters_json=json.dumps({"issue_iid": 100 + n}),
                        created_at=started + timedelta(seconds=index * 30),
                        timeout_ms=600_000,
                    ),
                )
            )
            coverage = round(rng.uniform(62, 97), 1)
            failed = stage == "quality-gate" and coverage < 80
            items.append(
                (
                    "bar.tasks.results",
                    AgentResult(
                        task_id=task_id,
                        agent=agent,
                        run_id=run_id,
                        stage=stage,
                        status=TaskStatus.FAILED if failed else TaskStatus.SUCCEEDED,
                        metrics=_metrics(stage, coverage, rng),
                        outputs={f"{stage}.out": f"artifact://{run_id}/{stage}"},
                        error=AgentError(
                            code="qits.coverage_below_threshold",
                            message=f"coverage {coverage}% < 80%",
                            retryable=False,
                        )
                        if failed
                        else None,
                        started_at=started + timedelta(seconds=index * 30),
                        finished_at=started + timedelta(seconds=index * 30 + 20),
                    ),
                )
            )
    return DemoBatch(items)


def _metrics(stage: str, coverage: float, rng: random.Random) -> dict[str, float]:
    if stage == "quality-gate":
        return {"coverage": coverage, "mutation_score": round(rng.uniform(55, 90), 1)}
    return {"duration_s": round(rng.uniform(2, 40), 2)}


def heartbeats(now: datetime, beats: int, rng: random.Random) -> DemoBatch:
    """Heartbeats of the workers' replicas."""
    return DemoBatch(
        [
            (
                "bar.agents.heartbeats",
                AgentHeartbeat(
                    agent=AGENTS[n % len(AGENTS)],
                    replica_id=f"{AGENTS[n % len(AGENTS)]}-{n % 3}",
                    state=rng.choice([ReplicaState.RUNNING, ReplicaState.IDLE]),
                    in_flight=rng.randint(0, 5),
                    cpu_percent=round(rng.uniform(3, 85), 1),
                    memory_bytes=rng.randint(120, 900) * 1024 * 1024,
                    sent_at=_ms(now),
                ),
            )
            for n in range(beats)
        ]
    )
