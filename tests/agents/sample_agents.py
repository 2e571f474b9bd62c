"""The sample agents (:mod:`agents.samples`) under any name, and what tests need around
them: the serve command line, their task topic, tasks, and reading topics to their end.

Give an agent another name in-process with ``EchoAgent(name="t-1234-echo")`` or, for a
replica process, with ``serve_command("EchoAgent", "t-1234-echo", ...)``, so a test
serves its own task topic ``bar.tasks.<name>``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from agents.samples import MANIFEST, EchoAgent, HogAgent, SleepyAgent, parameters
from buildkit.catalog import (
    Catalog,
    default_catalog,
    task_spec,
    task_topic_name,
)
from buildkit.contracts.base import Event
from buildkit.contracts.events import AgentResult, AgentTask
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics

__all__ = [
    "MANIFEST",
    "EchoAgent",
    "HogAgent",
    "SleepyAgent",
    "TopicReader",
    "agent_catalog",
    "create_task_topic",
    "parameters",
    "read_topic",
    "results_for",
    "sample_tasks",
    "serve_command",
]


# -- for tests that serve these agents on the real broker ------------------------------


def serve_command(
    agent_class: str,
    name: str,
    replica_id: str,
    *,
    heartbeat_interval_s: float = 0.2,
    manifest: str | None = None,
) -> list[str]:
    """The command line of one replica serving ``agent_class`` (e.g. ``"SleepyAgent"``)
    of this module as agent ``name``; run it from the repository root."""
    command = [
        sys.executable,
        "-m",
        "agents.runtime.serve",
        "--entrypoint",
        f"agents.samples:{agent_class}",
        "--name",
        name,
        "--replica-id",
        replica_id,
        "--heartbeat-interval",
        str(heartbeat_interval_s),
    ]
    return [*command, "--manifest", manifest] if manifest else command


def agent_catalog(name: str) -> Catalog:
    """The default catalog plus agent ``name``'s task topic (for producers and consumers)."""
    return Catalog([*default_catalog(), task_spec(name)])


def create_task_topic(settings: Settings, name: str) -> str:
    """Create agent ``name``'s task topic (and the shared agent topics); return its name."""
    apply_topics(settings, agent_catalog(name))
    return task_topic_name(name)


def sample_tasks(name: str, task_ids: list[str], **parameters: Any) -> list[AgentTask]:
    """Tasks for agent ``name`` with ``parameters`` as their ``parameters_json``."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        AgentTask(task_id=t, agent=name, created_at=now, parameters_json=json.dumps(parameters))
        for t in task_ids
    ]


class TopicReader:
    """Reads a topic by assignment (no group), each :meth:`read` up to the topic's end
    as it is at the call: it waits for a partition-EOF event at or past each partition's
    ListOffsets end, which is only a lower bound of the end on the embedded broker."""

    def __init__(self, settings: Settings, topic: str, *, from_end: bool = False) -> None:
        self.settings = settings
        self.topic = topic
        self._serde = SerdeRegistry(settings, default_catalog()).for_topic(topic)
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "unused",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 10,
                    "log_level": 0,
                }
            )
        )
        md = self._consumer.list_topics(topic, timeout=settings.client_timeout_s)
        self._partitions = sorted(md.topics[topic].partitions)
        start = []
        for p in self._partitions:
            low, high = self._ends(p)
            start.append(TopicPartition(topic, p, high if from_end else low))
        self._consumer.assign(start)
        self._eof: dict[int, int] = {}

    def _ends(self, partition: int) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.settings.client_timeout_s
        )
        return int(low), int(high)

    def read(self, timeout_s: float = 30) -> list[Event]:
        """Every value added since the previous call, decoded, up to the end as of now."""
        targets = {p: self._ends(p)[1] for p in self._partitions}
        deadline = time.monotonic() + timeout_s
        found: list[Event] = []
        while any(self._eof.get(p, -1) < end for p, end in targets.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic} did not reach its end in {timeout_s}s")
            msg = self._consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                found.append(self._serde.decode(msg.value()))
            elif err.code() == KafkaError._PARTITION_EOF:
                p = msg.partition() or 0
                self._eof[p] = max(self._eof.get(p, -1), msg.offset() or 0)
        return found

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_topic(settings: Settings, topic: str) -> list[Event]:
    """Every value on ``topic`` now, decoded."""
    with TopicReader(settings, topic) as reader:
        return reader.read()


def results_for(settings: Settings, task_ids: set[str] | list[str]) -> list[AgentResult]:
    """Every result on ``bar.tasks.results`` for one of ``task_ids``, duplicates included."""
    wanted = set(task_ids)
    return [
        r
        for r in read_topic(settings, "bar.tasks.results")
        if isinstance(r, AgentResult) and r.task_id in wanted
    ]
