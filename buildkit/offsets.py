"""Exact end offsets and consumer-group lag, also on brokers whose ListOffsets lies low.

``Consumer.get_watermark_offsets`` asks the broker (ListOffsets). The embedded broker
answers the last batch's base offset + 1 there: 100 tasks produced in one batch read
as an end offset of 1 (DESIGN.md, pinned by tests/test_offsets.py). The high
watermark that comes back in *fetch* responses is right, and so is the
partition-EOF event. :class:`EndOffsets` therefore keeps a consumer assigned to the
partitions (no group), reads forward to EOF on each (discarding the records — one
batch at most per partition behind the reported end on the first read, then only
what arrived since), and reports the fetch high watermarks. librdkafka has no API for
"fetch the high watermark without records", hence this class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from buildkit.kafka import cluster_metadata, missing_topic
from buildkit.settings import Settings

__all__ = ["EndOffsets", "GroupLag", "committed_offsets", "group_lag"]


class EndOffsets:
    """Exact end offsets of ``topics``, refreshed on every :meth:`read`."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings = settings
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "bar-end-offsets",  # never joins: assignment only
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 10,
                    "log_level": 0,
                }
            )
        )
        self._partitions: list[TopicPartition] = []
        md = cluster_metadata(self._consumer, settings)
        for topic in topics:
            if topic not in md.topics or md.topics[topic].error is not None:
                self._consumer.close()
                raise missing_topic(settings, topic)
            for p in sorted(md.topics[topic].partitions):
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=settings.client_timeout_s
                )
                # One before the reported end: the fetch returns that batch and EOF.
                self._partitions.append(TopicPartition(topic, p, max(low, high - 1)))
        self._consumer.assign(self._partitions)
        self._ends: dict[tuple[str, int], int] = {}

    def read(self, timeout_s: float | None = None) -> dict[tuple[str, int], int]:
        """``{(topic, partition): end offset}`` as of now: every record acknowledged
        before the call is below it."""
        timeout_s = timeout_s if timeout_s is not None else self.settings.client_timeout_s
        deadline = time.monotonic() + timeout_s
        pending = {(tp.topic, tp.partition) for tp in self._partitions}
        # EOF fires once per arrival at the end; a partition already at its end and
        # with nothing new gives none, so "nothing came back" also means "at the end"
        # once every partition was seen at EOF at least once.
        quiet_polls = 0
        while pending and time.monotonic() < deadline:
            msg = self._consumer.poll(0.05)
            if msg is None:
                quiet_polls += 1
                if quiet_polls >= 3 and self._ends:
                    pending = {k for k in pending if k not in self._ends}
                continue
            quiet_polls = 0
            key = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                self._ends[key] = msg.offset() or 0
                pending.discard(key)
            elif err is None:
                self._ends[key] = max(self._ends.get(key, 0), (msg.offset() or 0) + 1)
        for tp in self._partitions:
            key = (tp.topic, tp.partition)
            _, cached_high = self._consumer.get_watermark_offsets(tp, cached=True)
            if cached_high is not None and cached_high >= 0:
                self._ends[key] = max(self._ends.get(key, 0), cached_high)
            self._ends.setdefault(key, tp.offset if tp.offset >= 0 else 0)
        return dict(self._ends)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EndOffsets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class GroupLag:
    """A group's lag on some partitions: exact end offsets minus committed offsets."""

    group: str
    committed: dict[tuple[str, int], int]
    ends: dict[tuple[str, int], int]

    @property
    def per_partition(self) -> dict[tuple[str, int], int]:
        return {k: max(0, end - self.committed.get(k, 0)) for k, end in self.ends.items()}

    @property
    def total(self) -> int:
        return sum(self.per_partition.values())


def committed_offsets(
    settings: Settings, admin: object, group: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (partitions it never committed are left out)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    assert isinstance(admin, AdminClient)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])
    answer = admin.list_consumer_group_offsets(
        [request], request_timeout=settings.client_timeout_s
    )[group].result()
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in answer.topic_partitions
        if tp.offset is not None and tp.offset >= 0 and tp.error is None
    }


def group_lag(settings: Settings, admin: object, group: str, ends: EndOffsets) -> GroupLag:
    """``group``'s lag over the partitions ``ends`` tracks. A partition the group never
    committed counts from offset 0 (its consumers start at the earliest record)."""
    end_offsets = ends.read()
    committed = committed_offsets(settings, admin, group, list(end_offsets))
    return GroupLag(group, committed, end_offsets)
