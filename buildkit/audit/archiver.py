"""The archiver: every catalog topic, record by record, into Postgres, hash-chained.

A consumer group (``bar-audit-archiver``) reads raw records — never
deserialized, so it archives anything, undecodable records included — and
appends each batch to ``audit_records`` in one transaction. Kafka offsets are
committed only after that transaction committed: a crash at any moment
re-delivers, never skips. Re-delivered records are recognised (same topic,
partition, offset and identical content) and not written again, so a record is
archived exactly once however often it arrives.

Chains. Each (topic, partition) is one hash chain (:mod:`buildkit.audit.chain`).
Writers to a partition serialize on a transaction-scoped advisory lock and read
the chain head from the table inside it, so two archivers that briefly share a
partition during a rebalance still write one unbroken chain.

Generations: a broker that loses its data. The embedded Tansu keeps topics in
memory: after a restart every partition starts again at offset 0 while the
archive already holds offsets 0..N. The archiver notices when a record arrives
at an offset at or below the partition's archived head whose content differs
from the row archived at that offset (or that was never archived in the current
generation): the partition's log was reset. It then starts a new *generation*
for that partition (``generation`` + 1, part of the unique key and of each
row's hash) and continues the same chain — old rows stay, the chain stays one
sequence, and a whole generation cannot vanish unnoticed. Identical content at
an archived offset is a re-delivery, not a reset.

Limit: the reset is seen only through a record at an archived offset. A
consumer that keeps running across a broker restart re-reads from the start of
the new (empty) log, so this holds; it would miss the reset only if the new log
had grown past the old committed position before the consumer fetched again.

Topics: the catalog's topics that exist on the broker; missing ones are logged
and picked up when they appear (the list is re-checked every ``refresh_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from buildkit import db
from buildkit.audit.chain import GENESIS, encode_headers, record_hash
from buildkit.audit.heartbeat import write_heartbeat
from buildkit.audit.store import ensure_schema
from buildkit.catalog import Catalog, default_catalog
from buildkit.errors import BrokerUnavailable, BuildKitError
from buildkit.kafka import cluster_metadata
from buildkit.records import RawRecord
from buildkit.settings import Settings

log = logging.getLogger(__name__)

#: The archiver's consumer group.
GROUP = "bar-audit-archiver"

_Content = tuple[int, bytes | None, bytes | None, bytes]  # timestamp_ms, key, value, headers

_INSERT = """
INSERT INTO audit_records
    (seq, topic, partition, generation, "offset", timestamp_ms,
     key, value, headers, prev_hash, hash)
SELECT * FROM unnest(
    %b::bigint[], %b::text[], %b::int[], %b::int[], %b::bigint[], %b::bigint[],
    %b::bytea[], %b::bytea[], %b::bytea[], %b::bytea[], %b::bytea[])
ON CONFLICT ON CONSTRAINT audit_records_position DO NOTHING
"""  # %b: arrays sent in binary, about 3x faster than text-escaped bytea
# The chain head of a partition: its newest row (writers hold the partition's lock).
_HEAD = """
SELECT generation, "offset", hash FROM audit_records WHERE topic = %s AND partition = %s
ORDER BY generation DESC, "offset" DESC LIMIT 1
"""
_ARCHIVED = """
SELECT "offset", timestamp_ms, key, value, headers FROM audit_records
WHERE topic = %s AND partition = %s AND generation = %s AND "offset" = ANY(%s)
"""
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_SEQS = "SELECT nextval(pg_get_serial_sequence('audit_records', 'seq')) FROM generate_series(1, %s)"


@dataclass
class ArchiveStats:
    """What an archiver run did."""

    consumed: int = 0
    archived: int = 0
    duplicates: int = 0
    new_generations: int = 0
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    topics: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Records archived per second over the run."""
        return self.archived / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _WriteConflict(Exception):
    """Rows of this batch were already there: another writer got in first."""


class Archiver:
    """Consumes the catalog's topics in group ``group`` and appends them to the archive."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | None = None,
        *,
        group: str = GROUP,
        batch_size: int = 1000,
        heartbeat: Path | None = None,
        refresh_s: float = 10.0,
        log_every_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.group = group
        self.batch_size = batch_size
        self.heartbeat = heartbeat
        self.refresh_s = refresh_s
        self.log_every_s = log_every_s
        self.stats = ArchiveStats()
        self._conn = db.connect(settings)
        ensure_schema(self._conn)
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": settings.consumer_session_timeout_ms,
                    "log_level": 0,
                }
            )
        )
        self._subscribed: list[str] = []
        self._assigned = False
        self._idle_since = time.monotonic()
        self._last_beat = 0.0
        self._refresh_topics(first=True)

    # -- topics and group ------------------------------------------------------
    def _refresh_topics(self, *, first: bool = False) -> None:
        try:
            md = cluster_metadata(self._consumer, self.settings)
        except BrokerUnavailable:
            if first:
                raise
            log.warning("cannot reach Kafka at %s; will retry", self.settings.bootstrap_servers)
            return
        names = self.catalog.names()
        present = [n for n in names if n in md.topics and md.topics[n].error is None]
        if present == self._subscribed and not first:
            return
        missing = [n for n in names if n not in present]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(missing[:5]) + more
            log.warning(
                "%d catalog topic(s) do not exist on %s, not archived until they do: %s "
                "(run: buildkit topics apply)",
                len(missing),
                self.settings.bootstrap_servers,
                shown,
            )
        if present == self._subscribed:
            return
        if present:
            self._consumer.subscribe(
                present,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            log.info("archiving %d topic(s) in group %s", len(present), self.group)
        elif self._subscribed:
            self._consumer.unsubscribe()
        self._subscribed = present
        self.stats.topics = list(present)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True
        self._idle_since = time.monotonic()
        if partitions:
            log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            log.info("revoked %s", _describe(partitions))

    # -- the loop --------------------------------------------------------------
    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        max_records: int | None = None,
    ) -> ArchiveStats:
        """Archive until ``stop`` is set, ``max_records`` were consumed, or nothing new
        arrived for ``idle_timeout_s`` (counted from the group's first assignment;
        the join itself may take a session timeout more)."""
        began = time.monotonic()
        last_log = last_refresh = began
        join_grace = self.settings.consumer_session_timeout_ms / 1000 + 10
        self._idle_since = began
        while not (stop is not None and stop.is_set()):
            now = time.monotonic()
            self._beat(now)
            if max_records is not None and self.stats.consumed >= max_records:
                break
            if now - last_refresh >= self.refresh_s:
                self._refresh_topics()
                last_refresh = now
            if now - last_log >= self.log_every_s:
                self._log_progress(now - began)
                last_log = now
            want = self.batch_size
            if max_records is not None:
                want = min(want, max_records - self.stats.consumed)
            if self._subscribed:
                records = self._records(self._consumer.consume(num_messages=want, timeout=0.5))
            else:
                records = []
                time.sleep(0.5)
            if not records:
                if idle_timeout_s is not None:
                    # Until the group's first assignment, allow for the join itself.
                    joining = self._subscribed and not self._assigned
                    limit = idle_timeout_s + (join_grace if joining else 0)
                    if time.monotonic() - self._idle_since > limit:
                        break
                continue
            self._idle_since = time.monotonic()
            if not self._archive(records, stop):
                break
        self.stats.elapsed_s = time.monotonic() - began
        self._log_progress(self.stats.elapsed_s, final=True)
        return self.stats

    def _records(self, messages: list[Message]) -> list[RawRecord]:
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(RawRecord.from_message(msg))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error on %s[%s]: %s", msg.topic(), msg.partition(), err.str())
        return records

    def _archive(self, records: list[RawRecord], stop: threading.Event | None) -> bool:
        """Write one batch, then commit its offsets; False if stopped before it was written.

        A lost connection or a concurrent writer is retried with backoff: the
        batch is recomputed against the archive as it is then, so rows another
        writer added in between count as duplicates.
        """
        attempt = 0
        while True:
            try:
                archived, duplicates, generations = self._write(records)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError, _WriteConflict) as exc:
                attempt += 1
                self.stats.retries += 1
                delay = min(10.0, 0.2 * 2**attempt)
                log.warning(
                    "batch of %d record(s) not archived (%s); retrying in %.1fs",
                    len(records),
                    str(exc).strip(),
                    delay,
                )
                # Not committed to Kafka: if stopped now, the batch is re-delivered later.
                if stop is not None and stop.wait(delay):
                    return False
                if stop is None:
                    time.sleep(delay)
                if not isinstance(exc, _WriteConflict):
                    self._reconnect()
            except psycopg.Error as exc:
                raise BuildKitError(
                    f"the archiver cannot write to {self.settings.display_database_url()}: "
                    f"{str(exc)[:500]}"
                ) from exc
        self.stats.consumed += len(records)
        self.stats.archived += archived
        self.stats.duplicates += duplicates
        self.stats.new_generations += generations
        self.stats.batches += 1
        self._commit(records)
        return True

    def _reconnect(self) -> None:
        try:
            self._conn.close()
            self._conn = db.connect(self.settings)
        except BuildKitError as exc:
            log.warning("%s", exc)

    def _commit(self, records: list[RawRecord]) -> None:
        positions: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            positions[key] = max(positions.get(key, 0), record.offset + 1)
        try:
            offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Archived already; a re-delivery is recognised as a duplicate.
            log.warning("offset commit failed (records are archived; may be re-delivered): %s", exc)

    # -- one batch, one transaction ----------------------------------------------
    def _write(self, records: list[RawRecord]) -> tuple[int, int, int]:
        by_partition: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)
        rows: list[tuple[Any, ...]] = []
        duplicates = generations = 0
        with self._conn.transaction():
            # Sorted: two archivers locking the same partitions never deadlock.
            for (topic, partition), batch in sorted(by_partition.items()):
                new_rows, dup, gen = self._chain(topic, partition, batch)
                rows.extend(new_rows)
                duplicates += dup
                generations += gen
            if rows:
                # Explicit seq values, in chain order: the order of each chain is seq.
                seqs = sorted(r[0] for r in self._conn.execute(_SEQS, (len(rows),)))
                columns = [list(column) for column in zip(*rows, strict=True)]  # arrays, not rows
                cur = self._conn.execute(_INSERT, (seqs, *columns))
                if cur.rowcount != len(rows):
                    missing = len(rows) - cur.rowcount
                    raise _WriteConflict(f"{missing} row(s) were archived by another writer")
        return len(rows), duplicates, generations

    def _chain(
        self, topic: str, partition: int, batch: list[RawRecord]
    ) -> tuple[list[tuple[Any, ...]], int, int]:
        """The rows to append for one partition's records, linked to the archived chain head."""
        conn = self._conn
        conn.execute(_LOCK, (f"audit/{topic}/{partition}",))
        head = conn.execute(_HEAD, (topic, partition)).fetchone()
        generation, head_offset, prev = 0, -1, GENESIS
        if head is not None:
            generation, head_offset, prev = head[0], head[1], bytes(head[2])
        known: dict[int, _Content] = {}
        seen = [r.offset for r in batch if r.offset <= head_offset]
        if seen:
            found = conn.execute(_ARCHIVED, (topic, partition, generation, seen))
            known = {o: (ts, _b(k), _b(v), bytes(h)) for o, ts, k, v, h in found}
        rows: list[tuple[Any, ...]] = []
        duplicates = generations = 0
        for record in batch:
            headers = encode_headers(record.headers)
            content: _Content = (record.timestamp_ms, record.key, record.value, headers)
            if record.offset <= head_offset:
                if known.get(record.offset) == content:
                    duplicates += 1
                    continue
                generation += 1
                generations += 1
                known = {}
                log.warning(
                    "%s[%d]: offset %d is already archived with other content — the broker's log "
                    "was reset (restarted without its data?); archiving generation %d",
                    topic,
                    partition,
                    record.offset,
                    generation,
                )
            digest = record_hash(
                prev,
                topic,
                partition,
                generation,
                record.offset,
                record.timestamp_ms,
                record.key,
                record.value,
                headers,
            )
            rows.append(
                (
                    topic,
                    partition,
                    generation,
                    record.offset,
                    record.timestamp_ms,
                    record.key,
                    record.value,
                    headers,
                    prev,
                    digest,
                )
            )
            prev, head_offset = digest, record.offset
            known[record.offset] = content
        return rows, duplicates, generations

    # -- reporting -----------------------------------------------------------------
    def _beat(self, now: float) -> None:
        if self.heartbeat is None or now - self._last_beat < 1.0:
            return
        self._last_beat = now
        try:
            write_heartbeat(self.heartbeat)
        except OSError as exc:
            log.warning("cannot write heartbeat %s: %s", self.heartbeat, exc)

    def _log_progress(self, elapsed: float, *, final: bool = False) -> None:
        s = self.stats
        if not final and s.consumed == 0:
            return
        rate = s.archived / elapsed if elapsed > 0 else 0.0
        log.info(
            "%s%d record(s) consumed, %d archived (%.0f/s), %d duplicate(s), %d new generation(s)",
            "done: " if final else "",
            s.consumed,
            s.archived,
            rate,
            s.duplicates,
            s.new_generations,
        )

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Leave the group (committed offsets stay) and close the database connection."""
        try:
            self._consumer.close()
        finally:
            self._conn.close()

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_archiver(
    settings: Settings,
    catalog: Catalog | None = None,
    stop: threading.Event | None = None,
    idle_timeout_s: float | None = None,
    max_records: int | None = None,
    *,
    group: str = GROUP,
    heartbeat: Path | None = None,
) -> ArchiveStats:
    """Archive the catalog's topics until stopped, idle or ``max_records`` consumed."""
    with Archiver(settings, catalog, group=group, heartbeat=heartbeat) as archiver:
        return archiver.run(stop=stop, idle_timeout_s=idle_timeout_s, max_records=max_records)


def _b(data: Any) -> bytes | None:
    return None if data is None else bytes(data)


def _describe(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    return ", ".join(f"{t}{sorted(ps)}" for t, ps in sorted(by_topic.items()))
