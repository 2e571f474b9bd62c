"""Stand-in agents for engine tests: answer every task on their topics with a result.

Real agents come with the agent runtime (issue 4); these do what ROE needs of one:
read ``bar.tasks.<agent>``, answer on ``bar.tasks.results`` with the task's ids, an
artifact reference per declared output, and metrics — once per task id.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentError, AgentResult, AgentTask, TaskStatus
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from streams.roe.engine import RoeEngine


class StandInAgents(threading.Thread):
    """Answers tasks of ``agents`` until stopped; ``fail`` maps task ids to error codes."""

    def __init__(
        self, settings: Settings, agents: list[str], metrics: dict[str, float] | None = None
    ):
        super().__init__(daemon=True)
        self.settings = settings
        self.topics = [f"bar.tasks.{a}" for a in agents]
        self.metrics = metrics if metrics is not None else {"coverage": 91.0, "phpcs violations": 0}
        self.fail: dict[str, str] = {}
        self.silent: set[str] = set()
        self.answered: dict[str, AgentTask] = {}
        self.received: list[AgentTask] = []
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        catalog = default_catalog()
        serdes = SerdeRegistry(self.settings, catalog)
        consumer = Consumer(
            self.settings.kafka_config(**{"group.id": "stand-in-agents", "log_level": 0})
        )
        md = consumer.list_topics(timeout=10)
        consumer.assign(
            [
                TopicPartition(
                    t, p, consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                )
                for t in self.topics
                for p in md.topics[t].partitions
            ]
        )
        producer = TypedProducer(
            self.settings, catalog=catalog, serdes=serdes, source="stand-in-agents"
        )
        self.ready.set()
        try:
            while not self.stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None or msg.error() is not None:
                    continue
                task = serdes.for_topic(msg.topic() or "").decode(msg.value())
                assert isinstance(task, AgentTask)
                self.received.append(task)
                if task.task_id in self.answered or task.stage in self.silent:
                    continue
                self.answered[task.task_id] = task
                producer.produce("bar.tasks.results", self._result(task), key=task.task_id)
                producer.flush()
        finally:
            consumer.close()

    def _result(self, task: AgentTask) -> AgentResult:
        now = datetime.now(UTC).replace(microsecond=0)
        params = json.loads(task.parameters_json or "{}")
        outputs = {
            name: f"artifact://{task.run_id}/{task.stage}/{name}"
            for name in params.get("outputs", [])
        }
        code = self.fail.get(task.stage or "")
        return AgentResult(
            task_id=task.task_id,
            agent=task.agent,
            run_id=task.run_id,
            stage=task.stage,
            attempt=task.attempt,
            status=TaskStatus.FAILED if code else TaskStatus.SUCCEEDED,
            metrics=self.metrics,
            outputs=outputs,
            error=AgentError(code=code, message="stand-in failure", retryable=True)
            if code
            else None,
            started_at=now,
            finished_at=now,
        )

    def halt(self) -> None:
        self.stop.set()
        self.join(10)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@contextmanager
def running(
    settings: Settings, agents: StandInAgents | None, **engine_options: Any
) -> Iterator[RoeEngine]:
    """A ROE engine (and stand-in agents) running in threads for the ``with`` body."""
    if agents is not None:
        agents.start()
        assert agents.ready.wait(20), "stand-in agents did not start"
    engine = RoeEngine(settings, **engine_options)
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    worker.start()
    try:
        yield engine
    finally:
        stop.set()
        worker.join(20)
        engine.close()
        if agents is not None:
            agents.halt()
