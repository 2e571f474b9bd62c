"""Runs an :class:`~agents.runtime.agent.Agent` on Kafka.

Consumes ``bar.tasks.<name>`` in group ``bar-agent-<name>``, runs each task
through :func:`~agents.runtime.agent.execute` and produces the result to
``bar.tasks.results`` (keyed by task id). The result is flushed before the
record counts as handled, so the consumer commits only what was answered:
at-least-once. A redelivered task whose result this process already emitted is
not run again.

Limits: de-duplication is per process (the last ``dedup_capacity`` task ids it
answered); a task redelivered to another replica after a crash runs again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from agents.runtime.agent import DEFAULT_TIMEOUT_S, Agent, execute
from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.events import AgentTask
from buildkit.producer import TypedProducer
from buildkit.settings import Settings

__all__ = ["RESULTS_TOPIC", "AgentRunner", "RunnerStats"]

log = logging.getLogger(__name__)

RESULTS_TOPIC = "bar.tasks.results"


@dataclass
class RunnerStats:
    """What a runner did: tasks executed, redelivered tasks skipped, non-task records ignored."""

    executed: int = 0
    duplicates: int = 0
    ignored: int = 0


class _RecentIds:
    """A bounded set of task ids, forgetting the oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str) -> None:
        self._ids[task_id] = None
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class AgentRunner:
    """Serves ``agent``'s tasks from Kafka until stopped.

    ``group_id`` defaults to the manifest's ``bar-agent-<name>``. Every task runs
    on one event loop kept for the runner's lifetime, so an agent may hold async
    clients across tasks.
    """

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        *,
        catalog: Catalog | None = None,
        group_id: str | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        dedup_capacity: int = 100_000,
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.topic = agent.manifest.task_topic
        self.group_id = group_id or agent.manifest.group_id
        catalog = catalog or default_catalog()
        if self.topic not in catalog:
            catalog = Catalog([*catalog, TopicSpec(self.topic, AgentTask, key_field="task_id")])
        self.catalog = catalog
        self.default_timeout_s = default_timeout_s
        self.stats = RunnerStats()
        self._answered = _RecentIds(dedup_capacity)

    def run(
        self,
        stop: threading.Event | None = None,
        max_tasks: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> RunnerStats:
        """Serve tasks until ``stop`` is set, ``max_tasks`` records were handled
        (duplicates included) or nothing arrived for ``idle_timeout_s``."""
        producer = TypedProducer(self.settings, catalog=self.catalog, source=self.group_id)
        producer.check_topics([RESULTS_TOPIC])
        consumer = TypedConsumer(self.settings, self.group_id, [self.topic], catalog=self.catalog)
        with asyncio.Runner() as loop:

            def handle(record: ConsumedRecord) -> None:
                self._handle(record, loop, producer)

            try:
                consumer.run(
                    handle, max_records=max_tasks, idle_timeout_s=idle_timeout_s, stop=stop
                )
            finally:
                consumer.close()
                producer.close()
        return self.stats

    def _handle(
        self, record: ConsumedRecord, loop: asyncio.Runner, producer: TypedProducer
    ) -> None:
        task = record.value
        if not isinstance(task, AgentTask):
            self.stats.ignored += 1
            log.warning("%s: ignoring %s on %s", self.group_id, type(task).__name__, record.topic)
            return
        if task.task_id in self._answered:
            self.stats.duplicates += 1
            log.info("%s: task %s already answered, not run again", self.group_id, task.task_id)
            return
        result = loop.run(execute(self.agent, task, default_timeout_s=self.default_timeout_s))
        envelope = record.envelope
        producer.produce(
            RESULTS_TOPIC,
            result,
            key=task.task_id,
            correlation_id=envelope.correlation_id,
            traceparent=envelope.traceparent,
        )
        # Acknowledged before the offset can be committed: a crash re-runs, never loses.
        producer.flush()
        self._answered.add(task.task_id)
        self.stats.executed += 1
