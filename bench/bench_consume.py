"""(b) Consume + deserialize throughput against confluent-kafka's own paths.

Every path reads the same pre-filled 1-partition topic (records written by the
typed producer: wire format + 8 CloudEvents headers) with a fresh consumer
*assigned* to the partition from the beginning (no group join), in
``consume(num_messages=1000)`` batches. Each path reads the same fields of each
message — error, key, value, headers — and differs only in what it makes of
the value. Wall time runs from the first batch received to the last record
handled (connection set-up and the first fetch are excluded on every path).

* ``typed`` — ``TopicSerde.decode(value)`` → an ``AgentTask`` model, key as text:
  what ``TypedConsumer`` does per record.
* ``avro_deserializer`` — what ``DeserializingConsumer.poll`` does per message
  (``SerializationContext`` with the headers, ``StringDeserializer`` key,
  ``AvroDeserializer(from_dict=AgentTask.model_validate)``) — called on
  ``Consumer.consume`` batches, since ``DeserializingConsumer.consume`` is not
  implemented. The fair baseline: both paths end with a validated model.
* ``avro_deserializer_dict`` (info) — the same, stopping at fastavro's dict.
* ``raw`` — value bytes untouched.
* ``raw_default_config`` (info) — ``raw`` with librdkafka's default prefetch.

Every path but the last runs with ``queued.min.messages=1000000``: with the
default the fetcher paces itself on Tansu and even the raw loop waits for the
broker (~6.5 µs/record here), which would flatter every ratio against raw.
* ``typed_consumer_run`` (info, one run) — ``TypedConsumer.run`` with a no-op
  handler in a consumer group, timed from the handler's first call to its last
  (the group join, 3-6 s on Tansu, excluded); includes a synchronous commit per
  500-record batch.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringDeserializer

from bench.report import BenchResult, Goal, PathResult, Run, RunFn, run_interleaved
from buildkit.catalog import Catalog, TopicSpec
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.events import AgentTask
from buildkit.serde import SerdeRegistry, decode_key, registry_client
from buildkit.settings import Settings

BATCH = 1000
# With librdkafka's default (100k) the fetcher paces itself on Tansu and a raw loop
# waits for the broker (~170k rec/s here); a deeper prefetch queue lets the raw
# baseline run at client speed, so the ratios compare client-side costs only.
# Every path, TypedConsumer included, gets the same setting.
CONSUMER_OVERRIDES: dict[str, Any] = {"queued.min.messages": 1_000_000}
Handle = Callable[[list[Message]], None]


def assigned_consumer(
    settings: Settings, topic: str, overrides: dict[str, Any] | None = None
) -> Consumer:
    """A consumer reading partition 0 of ``topic`` from the start, without a group."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",  # required; nothing is committed
                "enable.auto.commit": False,
                "log_level": 0,
                **(overrides or {}),
            }
        )
    )
    # Connect to the partition's leader first, as BrokerReplay does while planning:
    # fetching then starts at assign() instead of waiting for a connection.
    consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=settings.client_timeout_s)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def timed_consume(
    settings: Settings,
    topic: str,
    n: int,
    handle: Handle,
    overrides: dict[str, Any] | None = None,
) -> Run:
    """Consume ``n`` records in batches, handing each batch to ``handle``; time from
    the first batch received to the last batch handled. ``overrides`` default to
    :data:`CONSUMER_OVERRIDES` (``{}``: librdkafka's defaults)."""
    consumer = assigned_consumer(
        settings, topic, CONSUMER_OVERRIDES if overrides is None else overrides
    )
    try:
        seen = 0
        start: float | None = None
        deadline = time.monotonic() + 120
        while seen < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consume of {topic}: {seen} of {n} records in 120s")
            batch = consumer.consume(num_messages=BATCH, timeout=1.0)
            if not batch:
                continue
            if start is None:
                start = time.perf_counter()
            handle(batch)
            seen += len(batch)
        assert start is not None
        return Run(time.perf_counter() - start, seen)
    finally:
        consumer.close()


def typed_handler(settings: Settings, topic: str) -> Handle:
    serde = SerdeRegistry(
        settings, Catalog([TopicSpec(topic, AgentTask, partitions=1)]), auto_register=False
    ).for_topic(topic)  # schema id lookup, outside the timing
    decode = serde.decode

    def handle(batch: list[Message]) -> None:
        for msg in batch:
            if (err := msg.error()) is not None:
                raise RuntimeError(err.str())
            decode_key(msg.key())
            decode(msg.value())
            msg.headers()

    return handle


def avro_handler(settings: Settings, topic: str, to_model: bool) -> Handle:
    from_dict: Any = (lambda d, ctx: AgentTask.model_validate(d)) if to_model else None
    value_deserializer = AvroDeserializer(registry_client(settings), from_dict=from_dict)
    key_deserializer = StringDeserializer("utf_8")

    def handle(batch: list[Message]) -> None:
        for msg in batch:
            if (err := msg.error()) is not None:
                raise RuntimeError(err.str())
            # Exactly DeserializingConsumer._deserialize, minus its error wrapping.
            ctx = SerializationContext(topic, MessageField.KEY, msg.headers())
            key_deserializer(msg.key(), ctx)
            ctx.field = MessageField.VALUE
            value_deserializer(msg.value(), ctx)

    return handle


def warm(settings: Settings, topic: str, handle: Handle) -> None:
    """Fetch writer schemas and the like once, outside the timing (one record)."""
    consumer = assigned_consumer(settings, topic)
    try:
        while not (batch := consumer.consume(num_messages=1, timeout=1.0)):
            pass
        handle(batch)
    finally:
        consumer.close()


def raw_handle(batch: list[Message]) -> None:
    for msg in batch:
        if (err := msg.error()) is not None:
            raise RuntimeError(err.str())
        msg.key()
        msg.value()
        msg.headers()


def run_typed_consumer(settings: Settings, topic: str, n: int) -> Run:
    """``TypedConsumer.run`` in a fresh group, timed from the first handled record."""
    group = f"bench-typed-{uuid.uuid4().hex[:8]}"
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=1)])
    consumer = TypedConsumer(
        settings, group, [topic], catalog=catalog, dead_letter=False, **CONSUMER_OVERRIDES
    )
    marks: list[float] = []

    def handler(record: ConsumedRecord) -> None:
        if not marks:
            marks.append(time.perf_counter())

    try:
        stats = consumer.run(handler, max_records=n, idle_timeout_s=30)
        end = time.perf_counter()
    finally:
        consumer.close()
    if stats.processed != n or not marks:
        raise RuntimeError(f"TypedConsumer.run handled {stats.processed} of {n}")
    return Run(end - marks[0], n)


def bench_consume(
    settings: Settings, topic: str, n: int, repeats: int, with_group: bool = True
) -> BenchResult:
    """Run the consume paths over the pre-filled ``topic`` of ``n`` records."""
    handles: dict[str, Handle] = {
        "typed": typed_handler(settings, topic),
        "avro_deserializer": avro_handler(settings, topic, to_model=True),
        "avro_deserializer_dict": avro_handler(settings, topic, to_model=False),
        "raw": raw_handle,
    }
    for handle in handles.values():
        warm(settings, topic, handle)
    paths = {
        "typed": PathResult(
            "typed",
            "Consumer.consume batches + per record: error check, decode_key, "
            "TopicSerde.decode → AgentTask model, headers()",
        ),
        "avro_deserializer": PathResult(
            "avro_deserializer",
            "Consumer.consume batches + DeserializingConsumer's per-message work: "
            "SerializationContext(headers), StringDeserializer key, "
            "AvroDeserializer(from_dict=AgentTask.model_validate) → model",
            role="baseline",
        ),
        "avro_deserializer_dict": PathResult(
            "avro_deserializer_dict",
            "as avro_deserializer, without from_dict: fastavro's dict, no model",
            role="info",
        ),
        "raw": PathResult(
            "raw",
            "Consumer.consume batches + per record: error check, key(), value(), headers(); "
            "value bytes untouched",
            role="baseline",
        ),
    }
    paths["raw_default_config"] = PathResult(
        "raw_default_config",
        "as raw, with librdkafka's default queued.min.messages: paced by the broker's fetches",
        role="info",
    )
    runners: dict[str, RunFn] = {
        name: functools.partial(timed_consume, settings, topic, n, handle)
        for name, handle in handles.items()
    }
    runners["raw_default_config"] = functools.partial(
        timed_consume, settings, topic, n, raw_handle, {}
    )
    run_interleaved(runners, repeats, paths)
    notes = [
        "All paths: fresh consumer assigned to partition 0 from the beginning (no group), "
        f"consume(num_messages={BATCH}) batches, timed from the first batch received.",
        f"Consumer config of every path (typed_consumer_run too): {CONSUMER_OVERRIDES} on top "
        "of the defaults, so the raw baseline is not capped by the broker's fetch pacing; "
        "raw_default_config shows what the default gives.",
        "DeserializingConsumer.consume() is not implemented in confluent-kafka, so the "
        "avro_deserializer paths replay its per-message _deserialize on Consumer.consume batches.",
    ]
    if with_group:
        paths["typed_consumer_run"] = PathResult(
            "typed_consumer_run",
            "TypedConsumer.run (group, cooperative-sticky) with a no-op handler, sync commit per "
            "500 records; timed from the first handler call (group join excluded); one run",
            role="info",
        )
        run = run_typed_consumer(settings, topic, n)
        paths["typed_consumer_run"].runs.append(run)
        print(
            f"  {'typed_consumer_run':<28} run 1/1: {run.records_per_s:>10,.0f} rec/s "
            f"{run.us_per_record:7.2f} µs/rec",
            flush=True,
        )
    return BenchResult(
        name="consume",
        title="Consume + deserialize: TopicSerde vs AvroDeserializer vs raw",
        parameters={
            "records": n,
            "repeats": repeats,
            "event": "AgentTask",
            "batch": BATCH,
            "partitions": 1,
            "consumer_config": CONSUMER_OVERRIDES,
            "timing": "first batch received until the last record handled",
        },
        paths=paths,
        goals=[Goal("typed", "avro_deserializer", 1.5), Goal("typed", "raw", 0.3)],
        goal_text="typed ≥ 1.5x avro_deserializer (both ending in a model) and ≥ 0.3x raw",
        notes=notes,
    )
