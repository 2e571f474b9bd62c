"""Replay from the audit archive: ``buildkit replay TOPIC --source archive``.

The same bounds as :class:`buildkit.replay.BrokerReplay`, read from Postgres, so
a range can be replayed after the broker lost it (the embedded broker forgets
everything on restart):

* a start offset (for every partition, or per partition; a partition missing
  from a per-partition bound starts at its first record), an inclusive end offset;
* a start time keeps the records stamped at or after it; an end time stops a
  partition at its first record stamped after it — exactly where the broker
  replay stops (timestamps are indexed, nothing is scanned to find a time);
* open bounds.

Records come partition by partition, in offset order, with their original key,
value and header bytes. The archive's snapshot is fixed when the replay opens.

Generations (see :mod:`buildkit.audit.archiver`): offsets only mean something
within one generation of a partition, so when either bound is an offset, only
the latest generation of each partition is read — the offsets the broker uses
now. Time and open bounds read every generation, oldest first: the whole
history the archive holds, including what a restarted broker lost.
``generation=`` picks one generation (or ``"latest"``/``"all"``) explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import psycopg

from buildkit import db
from buildkit.audit.chain import decode_headers
from buildkit.audit.store import require_schema
from buildkit.errors import UnknownTopic
from buildkit.records import RawRecord
from buildkit.replay import Bound, ProgressHook, ReplayStats
from buildkit.settings import Settings

GenerationChoice = int | Literal["latest", "all"] | None

_MIN = -(2**63)
_MAX = 2**63 - 1
_FETCH = 2000

# Every (partition, generation) of a topic, by skipping through the unique index
# instead of reading every row of it.
_GENERATIONS = """
WITH RECURSIVE pg AS (
    (SELECT partition, generation FROM audit_records WHERE topic = %(topic)s
     ORDER BY partition, generation LIMIT 1)
    UNION ALL
    SELECT n.partition, n.generation FROM pg, LATERAL (
        SELECT partition, generation FROM audit_records
        WHERE topic = %(topic)s AND (partition, generation) > (pg.partition, pg.generation)
        ORDER BY partition, generation LIMIT 1
    ) n
)
SELECT partition, generation FROM pg
"""
_FIRST_SINCE = """
SELECT min("offset") FROM audit_records
WHERE topic = %s AND partition = %s AND generation = %s AND "offset" >= %s AND timestamp_ms >= %s
"""
_FIRST_AFTER = """
SELECT min("offset") FROM audit_records
WHERE topic = %s AND partition = %s AND generation = %s AND "offset" >= %s AND timestamp_ms > %s
"""
_RANGE = """
FROM audit_records
WHERE topic = %s AND partition = %s AND generation = %s
  AND "offset" >= %s AND "offset" < %s AND timestamp_ms >= %s
"""
_COUNT = "SELECT count(*) " + _RANGE
_ROWS = 'SELECT "offset", timestamp_ms, key, value, headers ' + _RANGE + 'ORDER BY "offset"'


@dataclass(frozen=True)
class ArchivePlan:
    """One (partition, generation) to read: offsets ``first`` up to (not including) ``stop``."""

    partition: int
    generation: int
    first: int
    stop: int
    since_ms: int


class ArchiveReplay:
    """Reads a range of one topic from the audit archive in ``BAR_DATABASE_URL``."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        start: Bound,
        end: Bound,
        *,
        partitions: list[int] | None = None,
        generation: GenerationChoice = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.start = start
        self.end = end
        self.stats = ReplayStats()
        self._conn = db.connect(settings, autocommit=False)
        try:
            # One snapshot: the count and the rows agree while the archiver appends.
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
            require_schema(self._conn, settings)
            self.plans = self._plan(partitions, generation)
            self.stats.estimated_total = sum(self._count(plan) for plan in self.plans)
        except BaseException:
            self._conn.close()
            raise

    def _plan(
        self, partitions: list[int] | None, generation: GenerationChoice
    ) -> list[ArchivePlan]:
        found = self._conn.execute(_GENERATIONS, {"topic": self.topic}).fetchall()
        if not found:
            raise UnknownTopic(
                f'topic "{self.topic}" has no records in the audit archive at '
                f"{self.settings.display_database_url()} — check the name, or whether the "
                "archiver runs (buildkit audit archive)"
            )
        by_partition: dict[int, list[int]] = {}
        for partition, gen in found:
            by_partition.setdefault(partition, []).append(gen)
        if generation is None:
            by_offset = "offset" in (self.start.kind, self.end.kind)
            generation = "latest" if by_offset else "all"
        plans: list[ArchivePlan] = []
        for partition in sorted(by_partition):
            if partitions is not None and partition not in partitions:
                continue
            gens = by_partition[partition]
            if generation == "latest":
                gens = gens[-1:]
            elif generation != "all":
                gens = [g for g in gens if g == generation]
            plans.extend(self._plan_one(partition, gen) for gen in gens)
        return plans

    def _plan_one(self, partition: int, generation: int) -> ArchivePlan:
        key = (self.topic, partition, generation)
        first = 0
        if self.start.kind == "offset":
            first = self.start.offset_for(partition) or 0
        since = _MIN
        if self.start.kind == "time" and self.start.time_ms is not None:
            since = self.start.time_ms
            # The first record in time (time index), so nothing before it is scanned.
            row = self._conn.execute(_FIRST_SINCE, (*key, first, since)).fetchone()
            first = _MAX if row is None or row[0] is None else max(first, row[0])
        stop = _MAX
        if self.end.kind == "offset":
            limit = self.end.offset_for(partition)
            if limit is not None:
                stop = limit + 1
        elif self.end.kind == "time" and self.end.time_ms is not None:
            # Like the broker replay: the partition ends at its first record past the end,
            # counted from where the range starts (a start time only filters).
            origin = (self.start.offset_for(partition) or 0) if self.start.kind == "offset" else 0
            row = self._conn.execute(_FIRST_AFTER, (*key, origin, self.end.time_ms)).fetchone()
            if row is not None and row[0] is not None:
                stop = row[0]
        return ArchivePlan(partition, generation, first, stop, since)

    def _args(self, plan: ArchivePlan) -> tuple[object, ...]:
        return (self.topic, plan.partition, plan.generation, plan.first, plan.stop, plan.since_ms)

    def _count(self, plan: ArchivePlan) -> int:
        if plan.first >= plan.stop:
            return 0
        row = self._conn.execute(_COUNT, self._args(plan)).fetchone()
        return 0 if row is None else int(row[0])

    def records(self, progress: ProgressHook | None = None) -> Iterator[RawRecord]:
        """Every record in the range: partition by partition, generation by generation, in
        offset order."""
        for plan in self.plans:
            if plan.first >= plan.stop:
                continue
            with self._conn.cursor(name="audit_replay") as cur:
                cur.itersize = _FETCH
                cur.execute(_ROWS, self._args(plan))
                for offset, timestamp_ms, key, value, headers in cur:
                    self.stats.read += 1
                    self.stats.kept += 1
                    if progress is not None:
                        progress(1, self.stats.estimated_total)
                    yield RawRecord(
                        self.topic,
                        plan.partition,
                        offset,
                        timestamp_ms,
                        None if key is None else bytes(key),
                        None if value is None else bytes(value),
                        decode_headers(bytes(headers)),
                    )

    def close(self) -> None:
        """Release the database connection."""
        self._conn.close()
