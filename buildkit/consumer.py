"""Typed consumers (sync and asyncio) with at-least-once commits and a dead-letter topic.

Offsets are committed only after the handler returned for every record of a
batch (and after any dead-lettered record was acknowledged), so a crash at any
moment re-delivers, never skips. A record that cannot be deserialized, or whose
handler fails ``max_attempts`` times, goes to ``bar.dlq.<group>`` with the
error and its source topic/partition/offset in headers; the consumer moves on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from buildkit.catalog import Catalog, default_catalog, dlq_spec, dlq_topic_name
from buildkit.contracts.base import Event
from buildkit.envelope import Envelope
from buildkit.errors import DeliveryError
from buildkit.kafka import next_batch, require_topics
from buildkit.serde import SerdeRegistry, decode_key
from buildkit.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One record as a handler sees it: its place in the log, key, event and headers."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: Event
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @property
    def envelope(self) -> Envelope:
        """The CloudEvents attributes and trace context of the record."""
        return Envelope.from_headers(self.headers)

    @property
    def timestamp(self) -> datetime:
        """The record's broker timestamp as a UTC datetime."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


Handler = Callable[[ConsumedRecord], None]


def _header_list(msg: Message) -> list[tuple[str, bytes | None]]:
    """A message's headers as (name, bytes) pairs; librdkafka returns a list or None."""
    return list(msg.headers() or [])  # type: ignore[arg-type]


AsyncHandler = Callable[[ConsumedRecord], Awaitable[None]]


@dataclass
class ConsumeStats:
    """What a consumer run did."""

    processed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0


class TypedConsumer:
    """Consumes catalog topics in a consumer group, handing each event to a handler."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: list[str],
        *,
        catalog: Catalog | None = None,
        serdes: SerdeRegistry | None = None,
        max_attempts: int | None = None,
        retry_backoff_s: float = 0.05,
        dead_letter: bool = True,
        from_beginning: bool = True,
        **kafka_overrides: Any,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self.catalog = catalog or default_catalog()
        self.serdes = serdes or SerdeRegistry(settings, self.catalog, auto_register=True)
        self.max_attempts = max_attempts or settings.dlq_max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.dlq_topic = dlq_topic_name(group_id) if dead_letter else None
        self.stats = ConsumeStats()
        conf = settings.kafka_config(
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": settings.consumer_session_timeout_ms,
                "log_level": 0,
                **kafka_overrides,
            }
        )
        self._consumer = Consumer(conf)
        self._dlq: Producer | None = None
        for topic in self.topics:
            self.catalog.get(topic)  # unknown to the catalog: fail before touching Kafka
        require_topics(self._consumer, settings, self.topics)
        if self.dlq_topic:
            self._prepare_dlq()
        self._assigned_at = 0.0
        self._consumer.subscribe(self.topics, on_assign=self._on_assign)
        self._closed = False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Idle time counts from the last (re)assignment: joining a group whose dead
        # member has not timed out yet can take a whole session timeout.
        self._assigned_at = time.monotonic()

    def _prepare_dlq(self) -> None:
        # The dead-letter topic is declared by the catalog (dlq_spec) and created
        # through the same apply path as every other topic.
        from buildkit.topics import apply_topics

        apply_topics(self.settings, Catalog([dlq_spec(self.group_id)]))
        self._dlq = Producer(
            self.settings.kafka_config(
                **{
                    "allow.auto.create.topics": False,
                    "enable.idempotence": True,
                    "acks": "all",
                    "log_level": 0,
                }
            )
        )

    # -- the loop --------------------------------------------------------------
    def run(
        self,
        handler: Handler,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        batch_size: int = 500,
    ) -> ConsumeStats:
        """Consume until ``max_records`` were handled, ``idle_timeout_s`` passed with
        nothing new (see :meth:`_idle_for`), or ``stop`` is set. Commits after every batch."""
        last_activity = time.monotonic()
        while not (stop is not None and stop.is_set()):
            if (
                max_records is not None
                and self.stats.processed + self.stats.dead_lettered >= max_records
            ):
                break
            want = batch_size
            if max_records is not None:
                want = min(
                    batch_size, max_records - self.stats.processed - self.stats.dead_lettered
                )
            messages = next_batch(self._consumer, want, 0.2)
            if not messages:
                if idle_timeout_s is not None and self._idle_for(last_activity) > idle_timeout_s:
                    break
                continue
            last_activity = time.monotonic()
            self._process_batch(messages, handler)
        return self.stats

    def _idle_for(self, last_activity: float) -> float:
        """Seconds without work that count against the idle timeout.

        Waiting to be assigned partitions does not count until two session
        timeouts passed: a group whose crashed member still holds partitions
        only rebalances once the broker has given up on that member.
        """
        now = time.monotonic()
        idle = now - max(last_activity, self._assigned_at)
        if not self._consumer.assignment():
            idle -= 2 * self.settings.consumer_session_timeout_ms / 1000
        return idle

    def _process_batch(self, messages: list[Message], handler: Handler) -> None:
        positions: dict[tuple[str, int], int] = {}
        dead = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), err.str())
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            try:
                record = self._record(msg)
            except Exception as exc:
                self._dead_letter(msg, exc, attempts=0)
                dead += 1
            else:
                failure = self._handle(record, handler)
                if failure is not None:
                    self._dead_letter(msg, failure, attempts=self.max_attempts)
                    dead += 1
            positions[(topic, partition)] = offset + 1
        # A dead letter not acknowledged must not be committed past: it would be lost.
        if dead and self._dlq is not None and self._dlq.flush(self.settings.client_timeout_s * 4):
            raise DeliveryError(
                f"dead-letter topic {self.dlq_topic} did not acknowledge; offsets not committed"
            )
        if positions:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                asynchronous=False,
            )
            self.stats.commits += 1

    def _record(self, msg: Message) -> ConsumedRecord:
        topic = msg.topic() or ""
        value = self.serdes.for_topic(topic).decode(msg.value())
        return ConsumedRecord(
            topic,
            msg.partition() or 0,
            msg.offset() or 0,
            msg.timestamp()[1],
            decode_key(msg.key()),
            value,
            _header_list(msg),
        )

    def _handle(self, record: ConsumedRecord, handler: Handler) -> Exception | None:
        """Run the handler up to ``max_attempts`` times; the last failure, or None."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                handler(record)
            except Exception as exc:
                if attempt == self.max_attempts:
                    return exc
                self.stats.retries += 1
                time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            else:
                self.stats.processed += 1
                return None
        return None

    # -- dead letters ----------------------------------------------------------
    def _dead_letter(self, msg: Message, exc: Exception, attempts: int) -> None:
        self._send_dlq(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            msg.value(),
            _header_list(msg),
            exc,
            attempts,
        )

    def _send_dlq(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        exc: Exception,
        attempts: int,
    ) -> None:
        self.stats.dead_lettered += 1
        if self._dlq is None or self.dlq_topic is None:
            log.error(
                "dropping %s[%d]@%d after %d attempt(s): %s",
                topic,
                partition,
                offset,
                attempts,
                exc,
            )
            return
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        headers = [
            *headers,
            ("dlq_error", detail[:4000].encode()),
            ("dlq_error_type", type(exc).__name__.encode()),
            ("dlq_source_topic", topic.encode()),
            ("dlq_source_partition", str(partition).encode()),
            ("dlq_source_offset", str(offset).encode()),
            ("dlq_group", self.group_id.encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        log.warning(
            "dead-lettering %s[%d]@%d to %s: %s", topic, partition, offset, self.dlq_topic, detail
        )
        self._dlq.produce(self.dlq_topic, value, key, headers=headers)  # type: ignore[arg-type]
        self._dlq.poll(0)

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Leave the group (committed offsets stay)."""
        if self._closed:
            return
        self._closed = True
        if self._dlq is not None:
            self._dlq.flush(self.settings.client_timeout_s)
        self._consumer.close()

    def __enter__(self) -> TypedConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTypedConsumer:
    """asyncio face of :class:`TypedConsumer`: an ``async`` handler, same guarantees."""

    def __init__(self, settings: Settings, group_id: str, topics: list[str], **kwargs: Any) -> None:
        self._args = (settings, group_id, topics)
        self._kwargs = kwargs
        self._sync: TypedConsumer | None = None

    async def run(
        self,
        handler: AsyncHandler,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> ConsumeStats:
        """Like :meth:`TypedConsumer.run`; the blocking poll runs in a worker thread and
        each handler call runs on this event loop."""
        loop = asyncio.get_running_loop()
        if self._sync is None:
            self._sync = await asyncio.to_thread(TypedConsumer, *self._args, **self._kwargs)

        async def invoke(record: ConsumedRecord) -> None:
            await handler(record)

        def call(record: ConsumedRecord) -> None:
            asyncio.run_coroutine_threadsafe(invoke(record), loop).result()

        sync = self._sync
        return await asyncio.to_thread(
            lambda: sync.run(
                call, max_records=max_records, idle_timeout_s=idle_timeout_s, stop=stop
            )
        )

    async def close(self) -> None:
        """Leave the group."""
        if self._sync is not None:
            await asyncio.to_thread(self._sync.close)
