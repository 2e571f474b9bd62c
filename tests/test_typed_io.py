"""The typed producer and consumer against the real broker and registry."""

from __future__ import annotations

import asyncio
import re
import struct

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from buildkit.catalog import Catalog, TopicSpec, dlq_topic_name
from buildkit.consumer import AsyncTypedConsumer, ConsumedRecord, TypedConsumer
from buildkit.contracts.events import AgentHeartbeat, AgentTask, GitLabEvent
from buildkit.errors import DeliveryError, SerializationError
from buildkit.producer import AsyncTypedProducer, TypedProducer
from buildkit.serde import registry_client
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from tests.helpers.events import T0, heartbeat, task


def read_raw(
    settings: Settings, topic: str, partitions: int = 1, expect: int | None = None
) -> list:
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "raw-reader", "enable.partition.eof": True})
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found, eofs = [], set()
    try:
        while len(eofs) < partitions or (expect is not None and len(found) < expect):
            msg = consumer.poll(5)
            assert msg is not None, f"timed out reading {topic}: {len(found)} records"
            if msg.error():
                eofs.add(msg.partition())
                continue
            found.append(msg)
    finally:
        consumer.close()
    return found


@pytest.fixture
def catalog(settings: Settings, prefix: str) -> Catalog:
    cat = Catalog(
        [
            TopicSpec(f"{prefix}.tasks", AgentTask, partitions=3),
            TopicSpec(f"{prefix}.beats", AgentHeartbeat, partitions=1),
            TopicSpec(f"{prefix}.gitlab", GitLabEvent, partitions=1),
        ]
    )
    apply_topics(settings, cat)
    return cat


def test_records_are_confluent_wire_format_with_cloudevents_headers(settings, catalog, prefix):
    topic = f"{prefix}.beats"
    with TypedProducer(settings, catalog=catalog, source="tests") as producer:
        ids = [producer.produce(topic, heartbeat(n, prefix), key=f"k{n}") for n in range(5)]
    msgs = read_raw(settings, topic)
    assert len(msgs) == 5
    registered = registry_client(settings).get_latest_version(f"{topic}-value")
    for n, msg in enumerate(msgs):
        magic, schema_id = struct.unpack(">bI", msg.value()[:5])
        assert (magic, schema_id) == (0, registered.schema_id)
        headers = dict(msg.headers())
        assert headers["ce_id"].decode() == ids[n]
        assert headers["ce_source"] == b"tests"
        assert headers["ce_type"] == b"io.buildkit.bar.AgentHeartbeat"
        assert headers["ce_specversion"] == b"1.0"
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", headers["ce_time"])
        assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", headers["traceparent"])
        assert headers["correlation_id"].decode() == ids[n]
        assert msg.key() == f"k{n}".encode()
    assert len(set(ids)) == 5


def test_consumer_hands_over_every_event_and_dead_letters_poison(settings, catalog, prefix):
    topic = f"{prefix}.tasks"
    events = [task(n, prefix) for n in range(30)]
    with TypedProducer(settings, catalog=catalog) as producer:
        for event in events:
            producer.produce(topic, event, key=event.task_id)
    poison = events[7].task_id
    calls: dict[str, int] = {}
    seen: list[ConsumedRecord] = []

    def handle(record: ConsumedRecord) -> None:
        calls[record.key or ""] = calls.get(record.key or "", 0) + 1
        if record.key == poison:
            raise RuntimeError("cannot handle this one")
        seen.append(record)

    group = f"{prefix}-group"
    consumer = TypedConsumer(
        settings, group, [topic], catalog=catalog, max_attempts=3, retry_backoff_s=0.01
    )
    try:
        stats = consumer.run(handle, max_records=30, idle_timeout_s=20)
    finally:
        consumer.close()
    assert stats.processed == 29 and stats.dead_lettered == 1
    assert calls[poison] == 3
    assert sorted(r.value.task_id for r in seen) == sorted(
        e.task_id for e in events if e.task_id != poison
    )
    assert all(r.value == events[int(r.value.task_id.rsplit("-", 1)[1])] for r in seen)
    dead = read_raw(settings, dlq_topic_name(group))
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert dead[0].key() == poison.encode()
    assert headers["dlq_error_type"] == b"RuntimeError"
    assert b"cannot handle this one" in headers["dlq_error"]
    assert headers["dlq_source_topic"] == topic.encode()
    assert headers["dlq_attempts"] == b"3"
    source = (headers["dlq_source_partition"], headers["dlq_source_offset"])
    original = next(m for m in read_raw(settings, topic, 3) if m.key() == poison.encode())
    assert source == (str(original.partition()).encode(), str(original.offset()).encode())
    assert dead[0].value() == original.value()  # the original bytes, untouched
    # Everything was committed: a new consumer in the same group gets nothing.
    again = TypedConsumer(settings, group, [topic], catalog=catalog)
    try:
        assert again.run(lambda r: None, idle_timeout_s=6).processed == 0
    finally:
        again.close()


def test_undecodable_record_goes_to_the_dead_letter_topic(settings, catalog, prefix):
    topic = f"{prefix}.beats"
    raw = Producer(settings.kafka_config())
    raw.produce(topic, b"not avro at all", b"garbage")
    raw.flush(10)
    with TypedProducer(settings, catalog=catalog) as producer:
        producer.produce(topic, heartbeat(1, prefix), key="good")
    group = f"{prefix}-g"
    got: list[str | None] = []
    consumer = TypedConsumer(settings, group, [topic], catalog=catalog)
    try:
        stats = consumer.run(lambda r: got.append(r.key), max_records=2, idle_timeout_s=20)
    finally:
        consumer.close()
    assert got == ["good"] and stats.dead_lettered == 1
    [dead] = read_raw(settings, dlq_topic_name(group))
    assert dead.value() == b"not avro at all"
    assert dict(dead.headers())["dlq_error_type"] == b"SerializationError"


def test_full_local_queue_is_backpressure_not_loss(settings, catalog, prefix):
    topic = f"{prefix}.beats"
    producer = TypedProducer(settings, catalog=catalog, **{"queue.buffering.max.messages": 10})
    for n in range(2000):
        producer.produce(topic, heartbeat(n, prefix), key=str(n))
    stats = producer.flush()
    assert stats.acked == 2000 and stats.failed == 0
    assert len(read_raw(settings, topic, expect=2000)) == 2000


def test_oversized_record_is_refused_naming_size_and_limit(settings, catalog, prefix):
    topic = f"{prefix}.gitlab"
    big = GitLabEvent(
        event_id="e1", kind="push", occurred_at=T0, received_at=T0, raw_json="x" * 2_000_000
    )
    producer = TypedProducer(settings, catalog=catalog)
    with pytest.raises(DeliveryError, match=r"over the 1000000-byte limit"):
        producer.produce(topic, big, key="e1")
    assert producer.flush().acked == 0


def test_wrong_event_type_for_topic_is_refused(settings, catalog, prefix):
    producer = TypedProducer(settings, catalog=catalog)
    with pytest.raises(SerializationError, match="carries AgentTask, got AgentHeartbeat"):
        producer.produce(f"{prefix}.tasks", heartbeat(1), key="x")


def test_async_producer_and_consumer_round_trip(settings, catalog, prefix):
    topic = f"{prefix}.tasks"

    async def scenario() -> list[str]:
        async with AsyncTypedProducer(settings, catalog=catalog) as producer:
            deliveries = await asyncio.gather(
                *(producer.produce(topic, task(n, prefix), key=f"k{n}") for n in range(10))
            )
        assert sorted(
            d.offset for d in deliveries if d.partition == deliveries[0].partition
        ) == sorted({d.offset for d in deliveries if d.partition == deliveries[0].partition})
        assert len({d.event_id for d in deliveries}) == 10
        seen: list[str] = []

        async def handle(record: ConsumedRecord) -> None:
            await asyncio.sleep(0)
            seen.append(record.value.task_id)  # type: ignore[attr-defined]

        consumer = AsyncTypedConsumer(settings, f"{prefix}-async", [topic], catalog=catalog)
        try:
            await consumer.run(handle, max_records=10, idle_timeout_s=20)
        finally:
            await consumer.close()
        return seen

    seen = asyncio.run(scenario())
    assert sorted(seen) == sorted(f"{prefix}-task-{n}" for n in range(10))
