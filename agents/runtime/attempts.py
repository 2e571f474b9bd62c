"""Which replicas started a task and never answered it: crash-loop (poison) detection.

A task that kills its replica — it exhausts the memory limit, segfaults a native
library, hangs until the replica is replaced — never raises an exception the runner
could catch, so the consumer's retry-then-dead-letter path never sees it. Each
replica that dies on it leaves the task uncommitted; the next owner of the partition
takes it again, and dies again, forever (Kubernetes' CrashLoopBackOff).

The runner announces every task it starts in a RUNNING heartbeat carrying the task
id, before the agent runs it. The record that may have killed a previous owner is the
first record *without a result* a replica meets after its partition is assigned
(offsets are committed per batch, once the batch's results are acknowledged, and the
answered ones are skipped before this check), so only then does the runner ask
:func:`started_by`:
which other replicas announced this task within the lookback? With no result on
``bar.tasks.results`` for it (the de-duplication check runs first), each of them
died on it. After ``dlq_max_attempts`` such replicas, the runner does not run it: it
answers with a FAILED result (``agent.poison_task``, not retryable) and sends the task
to the group's dead-letter topic.

Limits: a replica killed mid-batch may also lose the not yet acknowledged results of
the batch's earlier tasks; those run again and their first one is checked too, so a
task counts as an attempt each time it is caught in such a batch. The announcement is
produced without waiting for the acknowledgement (a flush per task would double the
per-task latency), so a replica killed within milliseconds of starting a task may not
have announced it, and the task then takes one more attempt before it counts. The scan
reads the last ``lookback`` heartbeats of each partition and decodes only records
whose bytes contain the task id.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError

from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentHeartbeat, ReplicaState
from buildkit.kafka import next_batch, tail_consumer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings

__all__ = ["POISON_CODE", "started_by"]

#: The error code of a task that killed the replicas that started it.
POISON_CODE = "agent.poison_task"

HEARTBEATS_TOPIC = "bar.agents.heartbeats"


def started_by(
    settings: Settings,
    task_id: str,
    *,
    lookback: int = 5_000,
    timeout_s: float | None = None,
) -> set[str]:
    """Replica ids that announced starting ``task_id`` in their heartbeats (the last
    ``lookback`` records of each heartbeat partition)."""
    serde = SerdeRegistry(settings, default_catalog()).for_topic(HEARTBEATS_TOPIC)
    needle = task_id.encode()
    consumer = tail_consumer(
        settings, HEARTBEATS_TOPIC, lookback, eof=True, name="bar-task-attempts"
    )
    replicas: set[str] = set()
    try:
        pending = {tp.partition for tp in consumer.assignment()}
        deadline = time.monotonic() + (timeout_s or settings.client_timeout_s * 2)
        while pending and time.monotonic() < deadline:
            for msg in next_batch(consumer, 1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                    continue
                value = msg.value()
                if value is None or needle not in value:
                    continue  # cheap: Avro strings are their UTF-8 bytes
                beat = serde.decode(value)
                if (
                    isinstance(beat, AgentHeartbeat)
                    and beat.task_id == task_id
                    and beat.state == ReplicaState.RUNNING
                ):
                    replicas.add(beat.replica_id)
    finally:
        consumer.close()
    return replicas
