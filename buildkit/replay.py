"""Replay a range of a topic: exactly the records between two bounds, on any broker.

Neither a broker's high watermark nor its offsets-for-times answer is trusted
alone (the embedded Tansu reports the last batch's base offset + 1 from
ListOffsets, and offset 0 for every timestamp; see DESIGN.md):

* start by time: offsets-for-times is a hint, kept only when the record just
  before it is verifiably older than the start; otherwise the partition is read
  from its low watermark, and every record is filtered on its own timestamp;
* stop by time: at the first record past the end, per partition;
* stop by offset: at the first record past the end offset;
* end of data: a partition is done when the fetcher reports end-of-partition at
  an offset at or beyond the high watermark seen when the replay began — the
  partition-EOF event comes from fetch responses, which carry the real end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from buildkit.errors import BuildKitError
from buildkit.kafka import cluster_metadata, missing_topic, next_batch
from buildkit.records import RawRecord
from buildkit.settings import Settings

_RELATIVE = re.compile(r"^-(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Bound:
    """One end of a replay range: an offset (for every partition, or per partition) or a time."""

    kind: Literal["offset", "time", "open"]
    offset: int | None = None
    offsets: dict[int, int] | None = None
    time_ms: int | None = None

    def offset_for(self, partition: int) -> int | None:
        """The offset bound of ``partition`` (None for time or open bounds)."""
        if self.offsets is not None:
            return self.offsets.get(partition)
        return self.offset

    def describe(self) -> str:
        """Human form for progress lines."""
        if self.kind == "time" and self.time_ms is not None:
            return datetime.fromtimestamp(self.time_ms / 1000, UTC).isoformat(
                timespec="milliseconds"
            )
        if self.offsets is not None:
            return ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))
        return "open" if self.kind == "open" else f"offset {self.offset}"


OPEN = Bound("open")


def parse_bound(text: str | None, *, now: datetime | None = None) -> Bound:
    """Parse ``--from``/``--to``: ``123`` (offset), ``0:10,1:12`` (per partition),
    ISO-8601 time, ``now``, or a relative time such as ``-15m`` / ``-2h`` / ``-1d``."""
    if text is None or text == "":
        return OPEN
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return Bound("offset", offset=int(text))
    if re.fullmatch(r"\d+:\d+(,\d+:\d+)*", text):
        pairs = (item.split(":") for item in text.split(","))
        return Bound("offset", offsets={int(p): int(o) for p, o in pairs})
    current = now or datetime.now(UTC)
    if text == "now":
        return Bound("time", time_ms=_ms(current))
    relative = _RELATIVE.match(text)
    if relative:
        delta = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return Bound("time", time_ms=_ms(current - delta))
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BuildKitError(
            f'cannot read "{text}" as a bound: use an offset (1200), offsets per partition '
            "(0:10,1:12), an ISO-8601 time (2026-11-25T10:00:00Z), now, or -15m / -2h / -1d"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return Bound("time", time_ms=_ms(stamp))


def _ms(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)


@dataclass
class PartitionPlan:
    """Where one partition's replay starts and the end of data seen at the start.

    ``first`` is the first offset in range; ``start`` is where fetching begins,
    never past ``high``: a fetch beyond the end of a partition gets neither data
    nor an end-of-partition event from some brokers, so it would never finish.
    """

    partition: int
    first: int
    start: int
    high: int
    done: bool = False


@dataclass
class ReplayStats:
    """What a replay read and kept."""

    read: int = 0
    kept: int = 0
    estimated_total: int = 0


ProgressHook = Callable[[int, int], None]


class BrokerReplay:
    """Reads a range of one topic from the broker, partition by partition, without a group."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        start: Bound,
        end: Bound,
        *,
        partitions: list[int] | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.start = start
        self.end = end
        self.idle_timeout_s = idle_timeout_s
        self.stats = ReplayStats()
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "bar-replay",  # required by librdkafka; nothing is committed
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    # Replay reads data that is already there: long-polling an empty
                    # partition only delays its end-of-partition event.
                    "fetch.wait.max.ms": 50,
                    "log_level": 0,
                }
            )
        )
        md = cluster_metadata(self._consumer, settings)
        if topic not in md.topics:
            raise missing_topic(settings, topic)
        available = sorted(md.topics[topic].partitions)
        wanted = available if partitions is None else partitions
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise BuildKitError(
                f"topic {topic} has no partition {unknown[0]} (it has {len(available)})"
            )
        self.plans = [self._plan(p) for p in wanted]
        self.stats.estimated_total = sum(max(0, p.high - p.first) for p in self.plans)

    def _plan(self, partition: int) -> PartitionPlan:
        timeout = self.settings.client_timeout_s
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=timeout
        )
        start = low
        if self.start.kind == "offset":
            start = max(low, self.start.offset_for(partition) or 0)
        elif self.start.kind == "time" and self.start.time_ms is not None:
            start = self._verified_time_hint(partition, self.start.time_ms, low)
        return PartitionPlan(partition, start, min(start, max(high, low)), high)

    def _verified_time_hint(self, partition: int, time_ms: int, low: int) -> int:
        """offsets-for-times as a hint, kept only if the record before it is older."""
        timeout = self.settings.client_timeout_s
        try:
            [found] = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, partition, time_ms)], timeout=timeout
            )
        except Exception:
            return low
        hint = found.offset
        if hint is None or hint <= low:
            return low
        before = self._read_one(partition, hint - 1)
        if before is not None and before.offset == hint - 1 and before.timestamp_ms < time_ms:
            return hint
        return low

    def _read_one(self, partition: int, offset: int) -> RawRecord | None:
        self._consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.settings.client_timeout_s
        try:
            while time.monotonic() < deadline:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    return None
                return RawRecord.from_message(msg)
            return None
        finally:
            self._consumer.unassign()

    def _past_end(self, record: RawRecord) -> bool:
        if self.end.kind == "offset":
            limit = self.end.offset_for(record.partition)
            return limit is not None and record.offset > limit
        if self.end.kind == "time" and self.end.time_ms is not None:
            return record.timestamp_ms > self.end.time_ms
        return False

    def _in_range(self, record: RawRecord) -> bool:
        if self.start.kind == "time" and self.start.time_ms is not None:
            return record.timestamp_ms >= self.start.time_ms
        return True

    def records(self, progress: ProgressHook | None = None) -> Iterator[RawRecord]:
        """Every record in the range, partition order interleaved as fetched."""
        by_partition = {p.partition: p for p in self.plans}
        pending = [p for p in self.plans if not p.done]
        if not pending:
            return
        self._consumer.assign(
            [
                TopicPartition(
                    self.topic, p.partition, p.start if p.start >= 0 else OFFSET_BEGINNING
                )
                for p in pending
            ]
        )
        last_activity = time.monotonic()
        try:
            while any(not p.done for p in self.plans):
                batch = next_batch(self._consumer, 1000, 0.5)
                if not batch:
                    if time.monotonic() - last_activity > self.idle_timeout_s:
                        raise BuildKitError(
                            f"replay of {self.topic} stalled: no data and no end-of-partition for "
                            f"{self.idle_timeout_s:g}s on partition(s) "
                            f"{[p.partition for p in self.plans if not p.done]}"
                        )
                    continue
                last_activity = time.monotonic()
                for msg in batch:
                    plan = by_partition.get(msg.partition() or 0)
                    if plan is None or plan.done:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if (msg.offset() or 0) >= plan.high:
                                self._finish(plan)
                            continue
                        raise BuildKitError(
                            f"replay of {self.topic}[{plan.partition}] failed: {err.str()}"
                        )
                    record = RawRecord.from_message(msg)
                    if record.offset < plan.first:
                        continue
                    if self._past_end(record):
                        self._finish(plan)
                        continue
                    self.stats.read += 1
                    if progress is not None:
                        progress(1, self.stats.estimated_total)
                    if self._in_range(record):
                        self.stats.kept += 1
                        yield record
        finally:
            self._consumer.unassign()

    def _finish(self, plan: PartitionPlan) -> None:
        plan.done = True
        # Stop fetching a finished partition so its later records are not buffered.
        self._consumer.pause([TopicPartition(self.topic, plan.partition)])

    def close(self) -> None:
        """Release the client."""
        self._consumer.close()
