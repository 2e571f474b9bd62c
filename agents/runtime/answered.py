"""Which tasks already have a result: the de-duplication every replica of an agent shares.

A task is redelivered when the replica that ran it emitted its result but did not
commit the task's offset (it crashed, or the partition moved in a rebalance); the
redelivery may go to another replica. :class:`AnsweredTasks` lets that replica see
the result and not run the task again. It keeps the ids of tasks that have a result
on ``bar.tasks.results``. Records there are keyed by task id, and task ids are
globally unique and include the attempt (a retry is a new id), so keys suffice: no
value is decoded.

The guarantee rests on two orderings:

1. **A result is acknowledged before its task is committed.** The runner flushes
   the result (``acks=all``) before the task's offset can be committed, so a task
   whose offset was not committed either has no result or has one on the broker.
2. **A new owner catches up before its first record.** When a task partition is
   assigned to a replica, it calls :meth:`AnsweredTasks.catch_up` before handling
   any record of that partition. The previous owner's result was acknowledged
   before it died or gave the partition up, and so before this assignment, and
   :meth:`catch_up` reads every partition of the results topic to the end as it is
   at the call: it includes every result acknowledged before it.

Checking the set before running each task then skips every task answered by any
replica within the lookback window, and the replica adds its own results as it
emits them (so a redelivery within the same process is skipped without a read).

**How far back it looks.** On start it reads each results partition from
``max(low, listoffsets_high - lookback)``. On the embedded broker (Tansu) the
ListOffsets high watermark is only a lower bound of the partition's end (the last
batch's base offset + 1), so the start lies at or before ``end - lookback``: the
window holds at least ``lookback`` of the newest results per partition, never
fewer. A task whose result is older than that window (or than the ``capacity`` ids
kept in memory) runs again; in practice a redelivered task's result is among the
newest, because it was emitted just before the crash or rebalance that caused the
redelivery.

**How it knows it reached the end.** :meth:`catch_up` first asks each partition's
ListOffsets high watermark ``L`` (at the call), then reads until it saw a
partition-EOF event at an offset ``P >= L``. The fetch that reported EOF at ``P``
had every offset below ``P``; the last batch present at the call starts at
``L - 1 < P``, so every record present at the call is below ``P`` and was read.
That holds on any broker: where ListOffsets is exact, ``L`` is the end itself.

Limits: it does not stop two replicas from running the same task at the same
time. A replica that is still running a task when its partition is taken from it
(a handler running longer than ``max.poll.interval.ms``, or a network partition
that outlasts the session timeout) may emit a second result after the new owner
ran the task too. A crash between finishing a task and acknowledging its result
runs the task again (at-least-once); its side effects must be idempotent.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from confluent_kafka import Consumer, KafkaError, TopicPartition

from buildkit.errors import BuildKitError
from buildkit.kafka import next_batch, require_topics
from buildkit.serde import decode_key
from buildkit.settings import Settings

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_LOOKBACK", "AnsweredTasks", "CatchUpTimeout"]

log = logging.getLogger(__name__)

#: Results read back per partition of the results topic on start.
DEFAULT_LOOKBACK = 10_000
#: Task ids kept in memory; the oldest are forgotten first.
DEFAULT_CAPACITY = 100_000


class CatchUpTimeout(BuildKitError):
    """The results topic did not reach its end in time."""


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


class AnsweredTasks:
    """The ids of tasks with a result on ``topic``, read by assignment (no consumer group).

    Nothing is read until the first :meth:`catch_up`; between calls the set only grows
    by :meth:`add`. Not thread-safe: use it from the thread that consumes tasks.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str = "bar.tasks.results",
        *,
        lookback: int = DEFAULT_LOOKBACK,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if lookback < 0:
            raise ValueError(f"lookback must be 0 or more, got {lookback}")
        self.settings = settings
        self.topic = topic
        self.lookback = lookback
        self._ids = _RecentIds(capacity)
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    # Required by the client; never joined (assign) and never committed to.
                    "group.id": "bar-answered-tasks",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    # Every fetch on the embedded broker waits this long: keep catch-up quick.
                    "fetch.wait.max.ms": 10,
                    # Keys are all we need; do not buffer much ahead between catch-ups.
                    "queued.max.messages.kbytes": 4096,
                    "log_level": 0,
                }
            )
        )
        md = require_topics(self._consumer, settings, [topic])
        self._partitions = sorted(md.topics[topic].partitions)
        # The highest offset at which each partition reported end-of-partition.
        self._eof_at: dict[int, int] = {}
        self._assigned = False
        self._closed = False

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str) -> None:
        """Remember that ``task_id`` has a result (one this process emitted)."""
        self._ids.add(task_id)

    def _listed_end(self, partition: int) -> tuple[int, int]:
        """ListOffsets low and high watermark (high: a lower bound of the end on Tansu)."""
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.settings.client_timeout_s
        )
        return int(low), int(high)

    def _assign(self) -> None:
        start = []
        for partition in self._partitions:
            low, high = self._listed_end(partition)
            start.append(TopicPartition(self.topic, partition, max(low, high - self.lookback)))
        self._consumer.assign(start)
        self._assigned = True

    def catch_up(self, timeout_s: float | None = None) -> int:
        """Read every partition to its end as it is now; return how many results were read.

        Every result acknowledged before the call is in the set afterwards (see the
        module docstring for why the end is reached). Raises :class:`CatchUpTimeout`
        if ``timeout_s`` (default four client timeouts) passes without a record or an
        end-of-partition event.
        """
        partitions = [TopicPartition(self.topic, p) for p in self._partitions]
        if not self._assigned:
            self._assign()
        else:
            self._consumer.resume(partitions)
        targets = {p: self._listed_end(p)[1] for p in self._partitions}
        patience = self.settings.client_timeout_s * 4 if timeout_s is None else timeout_s
        last_progress = time.monotonic()
        read = 0
        while any(self._eof_at.get(p, -1) < end for p, end in targets.items()):
            messages = next_batch(self._consumer, 10_000, 0.1)
            if not messages:
                if time.monotonic() - last_progress > patience:
                    behind = sorted(p for p, e in targets.items() if self._eof_at.get(p, -1) < e)
                    raise CatchUpTimeout(
                        f"{self.topic} partition(s) {behind} did not reach their end within "
                        f"{patience:g}s on {self.settings.bootstrap_servers}"
                    )
                continue
            last_progress = time.monotonic()
            for msg in messages:
                err = msg.error()
                if err is None:
                    key = decode_key(msg.key())
                    if key is not None:
                        self._ids.add(key)
                        read += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    self._eof_at[partition] = max(self._eof_at.get(partition, -1), offset)
                else:
                    log.warning("reading %s: %s", self.topic, err.str())
        # Paused until the next catch-up: a follower of every partition costs the broker
        # a fetch per fetch.wait.max.ms per replica, which grows with the replica count.
        self._consumer.pause(partitions)
        return read

    def close(self) -> None:
        """Release the consumer."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> AnsweredTasks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
