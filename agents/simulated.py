"""Simulated agents: answer every task on their topics at once with a plausible result.

They stand in for the real agents (the agent runtime and the built-in agents come
with later issues) so that the demo and the ROE benchmark can run a workflow end to
end. Everything they send is marked: ``ce_source`` is ``simulated-agents`` and each
result carries the metric ``simulated = 1``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentResult, AgentTask, TaskStatus
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings

DEFAULT_METRICS = {"coverage": 91.0, "phpcs violations": 0.0, "mutation score": 78.0}


class SimulatedAgents(threading.Thread):
    """Answers the tasks of ``agents`` (topics ``bar.tasks.<agent>``) until :meth:`halt`."""

    def __init__(
        self, settings: Settings, agents: list[str], metrics: dict[str, float] | None = None
    ) -> None:
        super().__init__(name="simulated-agents", daemon=True)
        self.settings = settings
        self.topics = [f"bar.tasks.{agent}" for agent in agents]
        self.metrics = {**(metrics if metrics is not None else DEFAULT_METRICS), "simulated": 1.0}
        self.answered: set[str] = set()
        self.ready = threading.Event()
        self._halted = threading.Event()

    def run(self) -> None:
        catalog = default_catalog()
        serdes = SerdeRegistry(self.settings, catalog)
        consumer = Consumer(
            self.settings.kafka_config(
                **{"group.id": "simulated-agents", "fetch.wait.max.ms": 10, "log_level": 0}
            )
        )
        producer = TypedProducer(
            self.settings,
            catalog=catalog,
            serdes=serdes,
            source="simulated-agents",
            **{"linger.ms": 0},
        )
        try:
            md = consumer.list_topics(timeout=self.settings.client_timeout_s)
            # From the end: tasks sent before the agents started are not theirs to answer.
            consumer.assign(
                [
                    TopicPartition(
                        topic,
                        p,
                        consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=self.settings.client_timeout_s
                        )[1],
                    )
                    for topic in self.topics
                    for p in md.topics[topic].partitions
                ]
            )
            self.ready.set()
            while not self._halted.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error() is not None:
                    continue
                task = serdes.for_topic(msg.topic() or "").decode(msg.value())
                if not isinstance(task, AgentTask) or task.task_id in self.answered:
                    continue
                self.answered.add(task.task_id)
                producer.produce("bar.tasks.results", self.result(task), key=task.task_id)
                producer.flush()
        finally:
            consumer.close()

    def result(self, task: AgentTask) -> AgentResult:
        """A successful result with an artifact reference per declared output."""
        return simulated_result(task, self.metrics)

    def halt(self) -> None:
        """Stop answering and wait for the thread."""
        self._halted.set()
        self.join(10)


def simulated_result(task: AgentTask, metrics: dict[str, float]) -> AgentResult:
    """A successful result for ``task``: an artifact reference per output it declares."""
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    outputs = json.loads(task.parameters_json or "{}").get("outputs", [])
    return AgentResult(
        task_id=task.task_id,
        agent=task.agent,
        run_id=task.run_id,
        stage=task.stage,
        attempt=task.attempt,
        status=TaskStatus.SUCCEEDED,
        metrics=metrics,
        outputs={name: f"artifact://{task.run_id}/{task.stage}/{name}" for name in outputs},
        started_at=now,
        finished_at=now,
    )
