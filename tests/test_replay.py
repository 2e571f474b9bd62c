"""Replay returns exactly the records of a range — on the embedded broker too, whose high
watermark and offsets-for-times cannot be trusted (DESIGN.md, broker facts)."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.events import AgentTask
from buildkit.producer import TypedProducer
from buildkit.replay import BrokerReplay, parse_bound
from buildkit.replay_runner import run_replay
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from tests.helpers.events import task

BATCHES, PER_BATCH, PARTITIONS = 3, 10, 3


def produce_batches(
    settings: Settings, catalog: Catalog, topic: str, prefix: str, start: int = 0
) -> list[int]:
    """Send BATCHES flushes of PER_BATCH records to every partition; return each record's ms."""
    stamps = []
    with TypedProducer(settings, catalog=catalog, **{"linger.ms": 50}) as producer:
        n = start
        for _ in range(BATCHES):
            for partition in range(PARTITIONS):
                for _ in range(PER_BATCH):
                    producer.produce(topic, task(n, prefix), key=f"k{n}", partition=partition)
                    n += 1
            producer.flush()
            stamps.append(int(time.time() * 1000))
    return stamps


@pytest.fixture
def loaded(settings: Settings, prefix: str) -> tuple[Catalog, str]:
    topic = f"{prefix}.replay"
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=PARTITIONS)])
    apply_topics(settings, catalog)
    produce_batches(settings, catalog, topic, prefix)
    return catalog, topic


def test_broker_watermark_and_offsets_for_times_are_not_trusted(settings, loaded):
    _, topic = loaded
    total = BATCHES * PER_BATCH
    consumer = Consumer(settings.kafka_config(**{"group.id": "probe"}))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
        [hint] = consumer.offsets_for_times(
            [TopicPartition(topic, 0, int(time.time() * 1000) + 60_000)], timeout=5
        )
    finally:
        consumer.close()
    # Whatever this broker answers, replay must be exact; on Tansu high is 21 for 30 records.
    assert low == 0 and high <= total
    replay = BrokerReplay(settings, topic, parse_bound(None), parse_bound(None))
    try:
        records = list(replay.records())
    finally:
        replay.close()
    assert len(records) == total * PARTITIONS
    per_partition = {
        p: sorted(r.offset for r in records if r.partition == p) for p in range(PARTITIONS)
    }
    assert all(offsets == list(range(total)) for offsets in per_partition.values())
    # A future timestamp has no record: a correct broker answers -1 / end, Tansu answers 0.
    assert hint.offset in (-1, 0, total, high)


def test_offset_range_is_exact_per_partition(settings, loaded):
    _, topic = loaded
    replay = BrokerReplay(settings, topic, parse_bound("5"), parse_bound("24"))
    try:
        records = list(replay.records())
    finally:
        replay.close()
    for p in range(PARTITIONS):
        assert sorted(r.offset for r in records if r.partition == p) == list(range(5, 25))
    per_partition = BrokerReplay(
        settings, topic, parse_bound("0:28,2:1"), parse_bound("0:29,1:2,2:2")
    )
    try:
        got = sorted((r.partition, r.offset) for r in per_partition.records())
    finally:
        per_partition.close()
    assert got == [(0, 28), (0, 29), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]


def test_time_range_is_exact_although_offsets_for_times_answers_zero(settings, prefix):
    topic = f"{prefix}.timed"
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=PARTITIONS)])
    apply_topics(settings, catalog)
    produce_batches(settings, catalog, topic, prefix, start=0)
    time.sleep(0.05)
    window_start = int(time.time() * 1000)
    time.sleep(0.05)
    produce_batches(settings, catalog, topic, prefix, start=1000)
    time.sleep(0.05)
    window_end = int(time.time() * 1000)
    time.sleep(0.05)
    produce_batches(settings, catalog, topic, prefix, start=2000)
    from datetime import UTC, datetime

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    replay = BrokerReplay(
        settings, topic, parse_bound(iso(window_start)), parse_bound(iso(window_end))
    )
    try:
        records = list(replay.records())
    finally:
        replay.close()
    keys = sorted(int((r.key or b"k0")[1:]) for r in records)
    assert keys == list(range(1000, 1000 + BATCHES * PER_BATCH * PARTITIONS))
    assert all(window_start <= r.timestamp_ms <= window_end for r in records)


def test_replay_filters_to_file_and_copies_to_topic(settings, loaded, prefix, tmp_path):
    _, topic = loaded
    target = f"{prefix}.copy"
    apply_topics(settings, Catalog([TopicSpec(target, AgentTask, partitions=1)]))
    wanted = task(17, prefix).task_id
    out = tmp_path / "out.jsonl"
    with out.open("w") as sink:
        stats = run_replay(
            settings, topic, None, None, [("task_id", wanted)], sink=sink, show_progress=False
        )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats.kept == 1 and [r["value"]["task_id"] for r in rows] == [wanted]
    assert rows[0]["headers"]["ce_type"] == "io.buildkit.bar.AgentTask"
    copied = run_replay(
        settings, topic, "0:0", "0:9", [], to_topic=target, partitions=[0], show_progress=False
    )
    assert copied.kept == 10
    replay = BrokerReplay(settings, target, parse_bound(None), parse_bound(None))
    try:
        records = list(replay.records())
    finally:
        replay.close()
    source = BrokerReplay(settings, topic, parse_bound("0"), parse_bound("9"), partitions=[0])
    try:
        originals = list(source.records())
    finally:
        source.close()
    assert [r.value for r in records] == [r.value for r in originals]
    assert [dict(r.headers)["bar_replayed_from"] for r in records] == [
        f"{topic}/0/{n}".encode() for n in range(10)
    ]


def test_bad_bound_is_a_clear_error():
    from buildkit.errors import BuildKitError

    with pytest.raises(BuildKitError, match='cannot read "yesterday-ish" as a bound'):
        parse_bound("yesterday-ish")
    assert parse_bound("-2h").kind == "time"
    assert parse_bound("0:5,3:9").offsets == {0: 5, 3: 9}


def test_raw_values_replay_as_base64(settings, prefix, tmp_path):
    import base64

    from confluent_kafka import Producer

    topic = f"{prefix}.dlq"
    apply_topics(settings, Catalog([TopicSpec(topic, None, partitions=1)]))
    raw = Producer(settings.kafka_config())
    raw.produce(topic, b"\x01not wire format", b"k")
    raw.flush(10)
    out = tmp_path / "raw.jsonl"
    with out.open("w") as sink:
        stats = run_replay(settings, topic, None, None, [], sink=sink, show_progress=False)
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats.kept == 1
    assert base64.b64decode(row["value"]["_raw_base64"]) == b"\x01not wire format"


def test_generation_is_refused_for_the_broker_source(settings, loaded):
    from buildkit.errors import BuildKitError

    _, topic = loaded
    with pytest.raises(BuildKitError, match="--generation applies to --source archive only"):
        run_replay(settings, topic, None, None, [], sink=None, to_topic=None, generation="1")
