"""The reading loop behind ``buildkit consume``: records out as JSON Lines.

Without a group it assigns partitions directly (nothing is committed); with
``--group`` it subscribes and commits only what was written out. The end of
data is detected as in :mod:`buildkit.replay`: a partition-EOF event at or past
the high watermark seen at the start, never the watermark alone.
"""

from __future__ import annotations

import json
from typing import IO

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from buildkit.errors import BuildKitError
from buildkit.kafka import cluster_metadata, missing_topic, next_batch
from buildkit.records import GenericDecoder, RawRecord, record_json
from buildkit.replay import parse_bound
from buildkit.serde import registry_client
from buildkit.settings import Settings


def run_consume(
    settings: Settings,
    topic: str,
    sink: IO[str],
    *,
    from_beginning: bool = False,
    offset: str | None = None,
    group: str | None = None,
    max_records: int | None = None,
    follow: bool = False,
    partitions: list[int] | None = None,
) -> int:
    """Write records of ``topic`` to ``sink``; return how many were written."""
    conf = settings.kafka_config(
        **{
            "group.id": group or "bar-console",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": settings.consumer_session_timeout_ms,
            "log_level": 0,
        }
    )
    consumer = Consumer(conf)
    try:
        md = cluster_metadata(consumer, settings)
        if topic not in md.topics:
            raise missing_topic(settings, topic)
        available = sorted(md.topics[topic].partitions)
        wanted = partitions or available
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BuildKitError(
                f"topic {topic} has no partition {missing[0]} (it has {len(available)})"
            )
        highs = {
            p: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=settings.client_timeout_s
            )[1]
            for p in wanted
        }
        starts = _start_offsets(wanted, from_beginning, offset)
        # Never fetch past the end seen now: some brokers then send neither data nor
        # end-of-partition. Records below the requested offset are skipped instead.
        firsts = {p: o for p, o in starts.items() if o >= 0}
        fetch_from = {p: (min(o, highs[p]) if o >= 0 else o) for p, o in starts.items()}
        decoder = GenericDecoder(registry_client(settings), settings.schema_registry_url)
        done: set[int] = set()
        if group is not None and partitions is None and offset is None:
            reset: set[int] = set()

            def on_assign(c: Consumer, assigned: list[TopicPartition]) -> None:
                # A group with committed offsets resumes there; --from-beginning means the
                # oldest record, so each partition starts at the beginning on its first
                # assignment only (a later rebalance must not replay it again).
                if from_beginning:
                    for tp in assigned:
                        if tp.partition not in reset:
                            tp.offset = OFFSET_BEGINNING
                            reset.add(tp.partition)
                c.assign(assigned)

            consumer.subscribe([topic], on_assign=on_assign)
        else:
            consumer.assign([TopicPartition(topic, p, fetch_from[p]) for p in wanted])
        written = 0
        while max_records is None or written < max_records:
            if not follow and len(done) == len(wanted):
                break
            batch = next_batch(consumer, 500, 0.5)
            commit: dict[int, int] = {}
            for msg in batch:
                if _is_eof(msg):
                    if (msg.offset() or 0) >= highs.get(msg.partition() or 0, 0):
                        done.add(msg.partition() or 0)
                    continue
                error = msg.error()
                if error is not None:
                    raise BuildKitError(f"consuming {topic} failed: {error.str()}")
                done.discard(msg.partition() or 0)
                record = RawRecord.from_message(msg)
                if record.offset < firsts.get(record.partition, 0):
                    continue
                try:
                    value = decoder.decode_or_raw(record.value)
                except BuildKitError as exc:
                    value = {"_undecodable": str(exc)}
                sink.write(json.dumps(record_json(record, value), ensure_ascii=False) + "\n")
                written += 1
                commit[record.partition] = record.offset + 1
                if max_records is not None and written >= max_records:
                    break
            sink.flush()
            if group is not None and commit:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in commit.items()],
                    asynchronous=False,
                )
        return written
    finally:
        consumer.close()


def _is_eof(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def _start_offsets(
    partitions: list[int], from_beginning: bool, offset: str | None
) -> dict[int, int]:
    if offset is not None:
        bound = parse_bound(offset)
        if bound.kind != "offset":
            raise BuildKitError(
                f'--offset "{offset}" is not an offset (42) or per-partition offsets (0:42,1:17)'
            )
        starts: dict[int, int] = {}
        for p in partitions:
            given = bound.offset_for(p)
            starts[p] = OFFSET_END if given is None else given
        return starts
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    return dict.fromkeys(partitions, start)
