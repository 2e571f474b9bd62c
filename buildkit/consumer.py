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

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

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
    #: The key and value exactly as stored, for dead-lettering a record as it came.
    raw_key: bytes | None = None
    raw_value: bytes | None = None

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


#: Commit errors that mean "the group rebalanced under you", not "something broke".
_REBALANCE_ERRORS = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


@dataclass
class ConsumeStats:
    """What a consumer run did."""

    processed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    commits: int = 0
    #: Commits the group refused because a rebalance had begun (records redelivered).
    commits_voided: int = 0


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
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        **kafka_overrides: Any,
    ) -> None:
        self.settings = settings
        self._user_on_assign = on_assign
        self._from_beginning = from_beginning
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
        self._before_commit: Callable[[], object] | None = None
        self._batch_budget_s: float | None = None
        #: Fetched records a batch over its budget left for the next one.
        self._held: list[Message] = []
        # Where the consumer stands, kept by the polling thread for any thread to read:
        # the client's own calls block while another thread is inside poll().
        self._assigned: dict[tuple[str, int], None] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        self._watermarks_at = 0.0
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._closed = False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Idle time counts from the last (re)assignment: joining a group whose dead
        # member has not timed out yet can take a whole session timeout.
        self._assigned_at = time.monotonic()
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = None
        self._watermarks_at = 0.0
        try:
            committed = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=self.settings.client_timeout_s,
            )
        except KafkaException:
            committed = []  # the backlog of these partitions starts as an estimate
        for tp in committed:
            if tp.offset >= 0:
                self._positions[(tp.topic, tp.partition)] = tp.offset
        if self._user_on_assign is not None:
            self._user_on_assign(list(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.pop(key, None)
            self._positions.pop(key, None)
            self._watermarks.pop(key, None)

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
        batch_budget_s: float | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> ConsumeStats:
        """Consume until ``max_records`` were handled, ``idle_timeout_s`` passed with
        nothing new (see :meth:`_idle_for`), or ``stop`` is set. Commits after every batch,
        after calling ``before_commit`` (e.g. a producer's flush: what the handlers sent
        is acknowledged before their records count as done). With ``batch_budget_s`` a
        batch ends once its handlers took that long (at least one record each batch);
        the records not handled are fetched again."""
        self._before_commit = before_commit
        self._batch_budget_s = batch_budget_s
        last_activity = time.monotonic()
        while not (stop is not None and stop.is_set()):
            if (
                max_records is not None
                and self.stats.processed + self.stats.dead_lettered >= max_records
            ):
                break
            want = batch_size
            if max_records is not None:
                want = min(want, max_records - self.stats.processed - self.stats.dead_lettered)
            held, self._held = self._held, []
            messages = next_batch(self._consumer, want, 0.0 if held else 0.2)
            if held:
                # Records of partitions revoked meanwhile are their new owner's now.
                mine = set(self._assigned)
                messages = [
                    m for m in held if (m.topic() or "", m.partition() or 0) in mine
                ] + messages
            self._note_watermarks()
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
        started = time.monotonic()
        for index, msg in enumerate(messages):
            if (
                self._batch_budget_s is not None
                and positions
                and time.monotonic() - started > self._batch_budget_s
            ):
                # Over budget: keep the rest for the next batch, after a commit and a
                # poll, so a slow stretch never keeps the consumer from polling for long.
                # (Not a seek: the embedded broker holds every re-fetch for the whole
                # fetch.wait.max.ms.)
                self._held = messages[index:]
                break
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), err.str())
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            self._positions[(topic, partition)] = offset + 1
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
            if self._before_commit is not None:
                self._before_commit()
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                if exc.args[0].code() not in _REBALANCE_ERRORS:
                    raise
                # The group moved on while the batch ran: its records come back to
                # whoever owns the partitions now. At-least-once holds; carry on.
                self.stats.commits_voided += 1
                log.warning("%s: a rebalance voided a commit: %s", self.group_id, exc.args[0].str())
            else:
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
            msg.key(),
            msg.value(),
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
    def dead_letter(self, record: ConsumedRecord, exc: Exception, attempts: int) -> None:
        """Send ``record`` (as stored) to this group's dead-letter topic with ``exc`` as
        the reason, and wait for the acknowledgement — for a handler that decides a record
        is poison itself; its offset is then committed like a handled one."""
        self._send_dlq(
            record.topic,
            record.partition,
            record.offset,
            record.raw_key,
            record.raw_value,
            list(record.headers),
            exc,
            attempts,
        )
        if self._dlq is not None and self._dlq.flush(self.settings.client_timeout_s * 4):
            raise DeliveryError(f"dead-letter topic {self.dlq_topic} did not acknowledge")

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

    # -- where it stands ---------------------------------------------------------
    def _note_watermarks(self) -> None:
        """Keep the assigned partitions' fetch watermarks, at most every 0.1 s (local calls)."""
        now = time.monotonic()
        if now - self._watermarks_at < 0.1:
            return
        self._watermarks_at = now
        for topic, partition in list(self._assigned):
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high >= 0:
                self._watermarks[(topic, partition)] = (low, high)

    def assignment(self) -> list[TopicPartition]:
        """The partitions assigned to this consumer, as of its latest rebalance.

        Kept by the polling thread, so any thread may ask: the client's own
        ``assignment()`` blocks while another thread is inside ``poll()``.
        """
        return [TopicPartition(t, p) for t, p in list(self._assigned)]

    def backlog(self) -> dict[tuple[str, int], int]:
        """Records waiting in each assigned partition, by (topic, partition): the high
        watermark of the latest fetch minus the consumer's position, at least 0.

        As of the latest poll (a handler running long makes it older), from what the
        polling thread noted, so any thread may ask. The fetch high watermark is exact
        even where ListOffsets is not (the embedded broker); a partition not fetched
        yet counts 0. Before the first record of a partition, its committed offset is
        the position, else where the consumer starts (the low watermark, or the end if
        not ``from_beginning``).
        """
        positions = dict(self._positions)
        watermarks = dict(self._watermarks)
        waiting: dict[tuple[str, int], int] = {}
        for key in list(self._assigned):
            if key not in watermarks:
                waiting[key] = 0
                continue
            low, high = watermarks[key]
            start = low if self._from_beginning else high
            waiting[key] = max(0, high - positions.get(key, start))
        return waiting

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
