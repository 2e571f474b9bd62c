"""Realistic events for tests, at millisecond precision (what Avro timestamp-millis keeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentResult,
    AgentTask,
    ReplicaState,
    TaskStatus,
)

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


def task(n: int, prefix: str = "t", agent: str = "test-generator") -> AgentTask:
    return AgentTask(
        task_id=f"{prefix}-task-{n}",
        agent=agent,
        run_id=f"{prefix}-run-{n // 10}",
        stage="test-generation",
        inputs={"openapi-spec.yaml": f"artifact://runs/{n // 10}/openapi-spec.yaml"},
        created_at=T0 + timedelta(milliseconds=n),
    )


def result(n: int, prefix: str = "t", status: TaskStatus = TaskStatus.SUCCEEDED) -> AgentResult:
    return AgentResult(
        task_id=f"{prefix}-task-{n}",
        agent="test-generator",
        status=status,
        metrics={"coverage": 80.0 + n % 20},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=n),
    )


def heartbeat(n: int, prefix: str = "t") -> AgentHeartbeat:
    return AgentHeartbeat(
        agent="test-generator",
        replica_id=f"{prefix}-replica-{n}",
        state=ReplicaState.RUNNING,
        in_flight=n % 5,
        cpu_percent=12.5,
        memory_bytes=256 * 1024 * 1024,
        sent_at=T0 + timedelta(seconds=n),
    )
