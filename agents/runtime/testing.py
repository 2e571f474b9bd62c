"""Test your agent without a broker, like faust's ``agent.test_context()``::

    async def test_low_coverage_fails() -> None:
        ctx = AgentTestContext(CoverageAgent())
        result = await ctx.run(parameters_json='{"coverage": 40}')
        assert result.error is not None
        assert result.error.code == "qits.coverage_below_threshold"

:meth:`AgentTestContext.run` goes through the same :func:`~agents.runtime.agent.execute`
the Kafka runner uses, so timeouts and error codes behave as in production.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from agents.runtime.agent import DEFAULT_TIMEOUT_S, Agent, run_task
from buildkit.contracts.events import AgentResult, AgentTask, GitLabAction

__all__ = ["AgentTestContext"]


class AgentTestContext:
    """Runs tasks through ``agent`` in-process and keeps every task, result and the
    GitLab actions the tasks asked for."""

    def __init__(self, agent: Agent, *, default_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.agent = agent
        self.default_timeout_s = default_timeout_s
        self.tasks: list[AgentTask] = []
        self.results: list[AgentResult] = []
        self.actions: list[GitLabAction] = []

    def task(self, **fields: Any) -> AgentTask:
        """An :class:`AgentTask` for this agent; unset ids and times get fresh defaults."""
        now = datetime.now(UTC)
        defaults: dict[str, Any] = {
            "task_id": f"test-{uuid.uuid4().hex[:12]}",
            "agent": self.agent.name,
            "run_id": "test-run",
            "stage": "test",
            "created_at": now.replace(microsecond=now.microsecond // 1000 * 1000),
        }
        return AgentTask(**{**defaults, **fields})

    async def run(self, task: AgentTask | None = None, /, **fields: Any) -> AgentResult:
        """Run ``task`` (or one built from ``fields``, see :meth:`task`) and return its result."""
        if task is None:
            task = self.task(**fields)
        elif fields:
            task = task.model_copy(update=fields)
        self.tasks.append(task)
        execution = await run_task(self.agent, task, default_timeout_s=self.default_timeout_s)
        self.results.append(execution.result)
        self.actions.extend(execution.actions)
        return execution.result
