"""Exact end offsets and group lag on the embedded broker, whose ListOffsets lies low."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

from buildkit.kafka import admin_client
from buildkit.offsets import EndOffsets, group_lag
from buildkit.settings import Settings


def _topic(settings: Settings, name: str, partitions: int) -> None:
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()


def test_end_offsets_count_every_record_where_list_offsets_undercounts(settings, prefix):
    topic = f"{prefix}.ends"
    _topic(settings, topic, 4)
    producer = Producer(settings.kafka_config(**{"linger.ms": 50}))
    for n in range(100):
        producer.produce(topic, key=str(n).encode(), value=b"x")
    producer.flush(10)

    probe = Consumer(settings.kafka_config(**{"group.id": f"{prefix}-probe"}))
    listed = sum(probe.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(4))
    probe.close()
    with EndOffsets(settings, [topic]) as ends:
        first = ends.read()
        assert sum(first.values()) == 100
        # Pins the broker fact this module exists for (DESIGN.md): one batch per
        # partition reads as one record. If it ever holds, EndOffsets stays correct.
        assert listed < 100

        for n in range(7):
            producer.produce(topic, key=f"more-{n}".encode(), value=b"y")
        producer.flush(10)
        assert sum(ends.read().values()) == 107
        assert sum(ends.read().values()) == 107  # nothing new: same answer


def test_group_lag_is_exact_and_counts_uncommitted_partitions_from_zero(settings, prefix):
    topic = f"{prefix}.lag"
    _topic(settings, topic, 3)
    producer = Producer(settings.kafka_config())
    for n in range(30):
        producer.produce(topic, value=b"x", partition=n % 3)
    producer.flush(10)
    group = f"{prefix}-g"
    consumer = Consumer(settings.kafka_config(**{"group.id": group}))
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 10)], asynchronous=False
    )
    consumer.close()

    with EndOffsets(settings, [topic]) as ends:
        lag = group_lag(settings, admin_client(settings), group, ends)

    assert lag.per_partition == {(topic, 0): 6, (topic, 1): 0, (topic, 2): 10}
    assert lag.total == 16


def test_end_offsets_of_a_missing_topic_names_it(settings, prefix):
    import pytest

    from buildkit.errors import UnknownTopic

    with pytest.raises(UnknownTopic, match=f"{prefix}.nope"):
        EndOffsets(settings, [f"{prefix}.nope"])
