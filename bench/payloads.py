"""The records every benchmark path sends or reads, built once before any timing.

One realistic event type for all benchmarks: :class:`AgentTask`, the unit of
work dispatched on ``bar.tasks.<agent>`` — ~131 bytes in the wire format
(5-byte header + Avro), with a nested map, optional fields and a timestamp.
Agents cycle over four names, so a replay filter on ``agent`` keeps a quarter.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from buildkit.contracts.events import AgentTask
from buildkit.envelope import HeaderFactory
from buildkit.producer import TypedProducer
from buildkit.settings import Settings

AGENTS = ("test-generator", "api-builder", "doc-sync", "security-auditor")
FILTER = ("agent", "test-generator")  # keeps 1 record in 4
_BASE_TIME = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# Headers as confluent-kafka's produce() takes them.
KafkaHeaders = list[tuple[str, str | bytes | None]]


@dataclass
class Payloads:
    """Events, their keys and (for baselines) precomputed CloudEvents headers."""

    events: list[AgentTask]
    keys: list[str]
    key_bytes: list[bytes]
    headers: list[KafkaHeaders]

    def __len__(self) -> int:
        return len(self.events)


def make_event(i: int) -> AgentTask:
    """The ``i``-th benchmark event."""
    run = f"run-{i // 50:06d}"
    return AgentTask(
        task_id=f"task-{i:08d}",
        agent=AGENTS[i % len(AGENTS)],
        run_id=run,
        stage="generate-tests",
        attempt=1,
        inputs={"spec": f"artifacts/{run}/openapi.yaml"},
        parameters_json='{"coverage":0.8}',
        created_at=_BASE_TIME + timedelta(milliseconds=i),
        timeout_ms=600_000,
    )


def build_payloads(n: int) -> Payloads:
    """``n`` events with keys and headers; moved out of the GC's sight afterwards.

    ``gc.freeze`` keeps the collector from rescanning these long-lived objects
    during timed loops — the same for every path, so no path pays for another's
    garbage.
    """
    events = [make_event(i) for i in range(n)]
    keys = [e.task_id for e in events]
    factory = HeaderFactory("bench")
    ce_type = AgentTask.avro_name()
    headers = [cast(KafkaHeaders, factory.build(ce_type)) for _ in range(n)]
    payloads = Payloads(events, keys, [k.encode() for k in keys], headers)
    gc.collect()
    gc.freeze()
    return payloads


def prefill(settings: Settings, topic: str, payloads: Payloads) -> None:
    """Write every payload to ``topic`` with the typed producer (wire format + headers)."""
    from buildkit.catalog import Catalog, TopicSpec

    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=1)])
    producer = TypedProducer(settings, catalog=catalog, source="bench")
    for event, key in zip(payloads.events, payloads.keys, strict=True):
        producer.produce(topic, event, key)
    stats = producer.flush()
    if stats.acked != len(payloads):
        raise RuntimeError(f"prefill of {topic}: {stats.acked} of {len(payloads)} acknowledged")
