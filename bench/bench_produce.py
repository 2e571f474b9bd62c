"""(a) Typed Avro produce against confluent-kafka's own paths, in the same run.

Paths (each run: a fresh producer and a fresh 1-partition topic; wall time from
the first ``produce`` until ``flush`` returned, every record acknowledged):

* ``typed`` — ``TypedProducer.produce(topic, event, key)``: pydantic event in,
  compiled Avro codec, CloudEvents + traceparent headers *built per record*.
* ``avro_serializer`` — ``SerializingProducer`` with ``StringSerializer`` keys and
  ``AvroSerializer(to_dict=model_dump)``: the same pydantic events in, the same
  8 headers passed in precomputed (it does not pay for creating them).
* ``raw`` — ``Producer.produce`` of the precomputed wire bytes, key bytes and
  headers: the floor, what librdkafka alone costs for the same records.

All three share ``PRODUCER_DEFAULTS`` (idempotent, acks=all, linger 5 ms, lz4),
register a delivery callback that counts acknowledgements, call ``poll(0)`` after
each produce and treat ``BufferError`` as backpressure, as ``TypedProducer`` does.
Schema registration happens before timing on every path.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer, SerializingProducer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

from bench.payloads import Payloads
from bench.report import BenchResult, Goal, PathResult, Run, run_interleaved
from bench.stack import delete_topics, fresh_topic
from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.events import AgentTask
from buildkit.producer import PRODUCER_DEFAULTS, TypedProducer
from buildkit.serde import SerdeRegistry, registry_client
from buildkit.settings import Settings


class _Acks:
    """Delivery callback that counts acknowledgements, like TypedProducer's."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1


def _check(path: str, acked: int, failed: int, n: int) -> None:
    if acked != n or failed:
        raise RuntimeError(f"{path}: {acked} of {n} acknowledged, {failed} failed")


def _conf(settings: Settings) -> dict[str, Any]:
    return settings.kafka_config(**PRODUCER_DEFAULTS)


def _connect(producer: Producer, topic: str, settings: Settings) -> None:
    """Connect and fetch the topic's metadata before timing, as TypedProducer.check_topics
    does on the typed path: no path pays for connection set-up."""
    producer.list_topics(topic, timeout=settings.client_timeout_s)


def run_typed(settings: Settings, payloads: Payloads, topics: list[str]) -> Run:
    topic = fresh_topic(settings, "produce.typed", AgentTask)
    topics.append(topic)
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=1)])
    producer = TypedProducer(settings, catalog=catalog, source="bench")
    producer.check_topics([topic])
    producer.serdes.for_topic(topic)  # schema registration, outside the timing
    produce = producer.produce
    n = len(payloads)
    start = time.perf_counter()
    for event, key in zip(payloads.events, payloads.keys, strict=True):
        produce(topic, event, key)
    stats = producer.flush()
    elapsed = time.perf_counter() - start
    _check("typed", stats.acked, stats.failed, n)
    return Run(elapsed, n)


def run_avro_serializer(settings: Settings, payloads: Payloads, topics: list[str]) -> Run:
    topic = fresh_topic(settings, "produce.avro", AgentTask)
    topics.append(topic)
    serializer = AvroSerializer(
        registry_client(settings),
        AgentTask.avro_schema_str(),
        to_dict=lambda obj, ctx: obj.model_dump(),
    )
    # Registers the schema under <topic>-value and caches its id, outside the timing.
    serializer(payloads.events[0], SerializationContext(topic, MessageField.VALUE))
    producer = SerializingProducer(
        {
            **_conf(settings),
            "key.serializer": StringSerializer("utf_8"),
            "value.serializer": serializer,
        }
    )
    _connect(producer, topic, settings)
    acks = _Acks()
    produce, poll = producer.produce, producer.poll
    n = len(payloads)
    start = time.perf_counter()
    for event, key, headers in zip(payloads.events, payloads.keys, payloads.headers, strict=True):
        while True:
            try:
                produce(topic, key=key, value=event, headers=headers, on_delivery=acks)
                break
            except BufferError:
                poll(0.05)
        poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    _check("avro_serializer", acks.acked, acks.failed + remaining, n)
    return Run(elapsed, n)


def run_raw(settings: Settings, payloads: Payloads, wire: list[bytes], topics: list[str]) -> Run:
    topic = fresh_topic(settings, "produce.raw", AgentTask)
    topics.append(topic)
    producer = Producer(_conf(settings))
    _connect(producer, topic, settings)
    acks = _Acks()
    produce, poll = producer.produce, producer.poll
    n = len(payloads)
    start = time.perf_counter()
    for value, key, headers in zip(wire, payloads.key_bytes, payloads.headers, strict=True):
        while True:
            try:
                produce(topic, value, key, headers=headers, on_delivery=acks)
                break
            except BufferError:
                poll(0.05)
        poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    _check("raw", acks.acked, acks.failed + remaining, n)
    return Run(elapsed, n)


def wire_values(settings: Settings, payloads: Payloads) -> list[bytes]:
    """The wire-format bytes of every payload (what the typed path would send)."""
    topic = fresh_topic(settings, "produce.wire", AgentTask)
    serde = SerdeRegistry(settings, Catalog([TopicSpec(topic, AgentTask, partitions=1)])).for_topic(
        topic
    )
    delete_topics(settings, [topic])
    return [serde.encode(e) for e in payloads.events]


def bench_produce(
    settings: Settings, payloads: Payloads, wire: list[bytes], repeats: int
) -> BenchResult:
    """Run the three produce paths ``repeats`` times each, interleaved."""
    paths = {
        "typed": PathResult(
            "typed",
            "TypedProducer.produce(topic, event, key): compiled Avro encode + wire header, "
            "8 CloudEvents/traceparent headers built per record, delivery callback, poll(0); "
            "+ flush",
        ),
        "avro_serializer": PathResult(
            "avro_serializer",
            "SerializingProducer + StringSerializer key + AvroSerializer(to_dict=model_dump) "
            "from the same pydantic events; the same 8 headers precomputed (not built); "
            "delivery callback, poll(0); + flush",
            role="baseline",
        ),
        "raw": PathResult(
            "raw",
            "Producer.produce of precomputed wire bytes, key bytes and the same 8 headers "
            "precomputed; delivery callback, poll(0); + flush",
            role="baseline",
        ),
    }
    topics: list[str] = []

    def cleanup_after(fn: Any) -> Any:
        def run() -> Run:
            try:
                return fn()
            finally:
                # Tansu keeps every topic in memory: drop each one once measured.
                delete_topics(settings, topics)
                topics.clear()

        return run

    runners = {
        "typed": cleanup_after(lambda: run_typed(settings, payloads, topics)),
        "avro_serializer": cleanup_after(lambda: run_avro_serializer(settings, payloads, topics)),
        "raw": cleanup_after(lambda: run_raw(settings, payloads, wire, topics)),
    }
    run_interleaved(runners, repeats, paths)
    return BenchResult(
        name="produce",
        title="Typed Avro produce vs SerializingProducer+AvroSerializer vs raw bytes",
        parameters={
            "records": len(payloads),
            "repeats": repeats,
            "event": "AgentTask",
            "wire_bytes_per_record": round(sum(map(len, wire)) / len(wire), 1),
            "headers_per_record": len(payloads.headers[0]),
            "partitions": 1,
            "producer_config": {k: v for k, v in PRODUCER_DEFAULTS.items() if k != "log_level"},
            "timing": "first produce() until flush() returned with every record acknowledged",
        },
        paths=paths,
        goals=[Goal("typed", "avro_serializer", 1.5), Goal("typed", "raw", 0.3)],
        goal_text="typed ≥ 1.5x avro_serializer and ≥ 0.3x raw (records/s, medians)",
        notes=[
            "Baselines get the CloudEvents headers precomputed, so they pay librdkafka's cost "
            "of carrying 8 headers but not of creating them; the typed path creates them (a "
            "fresh id, time and W3C traceparent per record). This is the strict comparison.",
            "Runs are interleaved round-robin with a rotating start; each run uses a fresh "
            "producer and a fresh topic, deleted after the run.",
        ],
    )
