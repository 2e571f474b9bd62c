"""At most one event per GitLab delivery: de-duplication on the delivery's key.

GitLab re-sends a delivery that timed out or got a non-2xx answer, with the same
``Idempotency-Key``; ``X-Gitlab-Event-UUID`` names the event itself. The key of a
delivery is the first of the two that is present (:func:`delivery_key`), and
becomes the event's ``event_id``.

:class:`Deduplicator` keeps

* the keys already published, in a bounded LRU (a repeat answers 2xx and publishes
  nothing), and
* one future per key being published *now*: a concurrent repeat waits for the first
  attempt's outcome instead of publishing a second event. If the first attempt
  failed (no broker ack), the waiter becomes the next attempt.

A key is marked seen only after the broker acknowledged its event. Keys are scoped by
project (:func:`scoped_key`): a token holder of one project cannot suppress another
project's delivery by sending its key. The seen-set survives a restart of the
connector because it is rebuilt from the tail of the topic itself
(:func:`recent_delivery_keys`, a bounded number of records per partition): the topic
is the record of what was published, so no other store can disagree with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from buildkit.settings import Settings

__all__ = [
    "SEED_RECORDS",
    "Deduplicator",
    "Outcome",
    "delivery_key",
    "recent_delivery_keys",
    "scoped_key",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_KEY_LENGTH = 200
"""Longer keys are refused (400): GitLab's are UUIDs; a key is kept in memory."""


def delivery_key(headers: Any) -> tuple[str | None, str]:
    """``(key, header name)`` of a delivery: ``Idempotency-Key``, else
    ``X-Gitlab-Event-UUID``; ``(None, "")`` when it carries neither (no de-duplication).

    ``headers`` is any case-insensitive mapping (Starlette's ``Headers``)."""
    for name in ("Idempotency-Key", "X-Gitlab-Event-UUID"):
        value = headers.get(name)
        if value is not None and value.strip():
            return value.strip(), name
    return None, ""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What :meth:`Deduplicator.once` did: ran the action (``result``) or found a repeat."""

    duplicate: bool
    result: T | None = None


class Deduplicator:
    """Bounded LRU of published keys plus per-key in-flight futures (one event loop)."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"de-duplication capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def mark_seen(self, keys: Iterable[str]) -> None:
        """Record published keys, oldest first; the least recently seen fall out."""
        for key in keys:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    async def once(self, key: str | None, action: Callable[[], Awaitable[T]]) -> Outcome[T]:
        """Run ``action`` unless ``key`` was published or is being published.

        ``key`` None always runs it. An exception from ``action`` propagates and leaves
        ``key`` unseen, so a retry of the delivery runs it again.
        """
        if key is None:
            return Outcome(False, await action())
        while True:
            if key in self._seen:
                self._seen.move_to_end(key)
                return Outcome(True)
            running = self._in_flight.get(key)
            if running is None:
                break
            # shield: this request being cancelled must not cancel the first attempt.
            if await asyncio.shield(running):
                return Outcome(True)
            # The first attempt failed: loop, and become (or wait for) the next one.
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        succeeded = False
        try:
            result = await action()
            succeeded = True
            self.mark_seen([key])
            return Outcome(False, result)
        finally:
            del self._in_flight[key]
            done.set_result(succeeded)


def scoped_key(project_id: object, project_path: object, key: str) -> str:
    """The seen-set's key of a delivery: its key within its project (id, else path, else
    ``-``), so a delivery for one project cannot mark another project's key as seen."""
    scope = project_id if project_id is not None else (project_path or "-")
    return f"{scope}:{key}"


#: Records per partition read back to restore the seen-set at start-up. GitLab retries
#: a failed delivery a few times within minutes, so only the newest deliveries matter.
SEED_RECORDS = 10_000
#: The slowest read rate (records/s) the seeding deadline allows for, on top of the
#: client timeout; the deadline grows with the records to be read.
_SEED_MIN_RATE = 2_000


def recent_delivery_keys(
    settings: Settings,
    topic: str,
    decode: Callable[[bytes | None], Any],
    per_partition: int = SEED_RECORDS,
    *,
    project_keyed: bool = True,
    stop: threading.Event | None = None,
) -> list[str]:
    """The :func:`scoped_key` of the last ``per_partition`` (at least) records of each
    partition of ``topic``, oldest first per partition; none when the topic does not exist.

    Bounded by count, not time: the embedded broker answers offsets-for-times with 0, so
    "newer than GitLab's retry horizon" cannot be asked for. With ``project_keyed`` (the
    record key is the project id, as the webhook publishes) a record's key and its
    ``ce_id`` header (the event id) are enough; only a record without them is decoded.

    Blocking; the deadline is the client timeout twice plus the records to read at
    2,000/s. Raises BrokerUnavailable when the broker cannot be reached, TimeoutError when
    the tail is not read to its end in time (an incomplete seen-set: better not to serve),
    InterruptedError when ``stop`` is set."""
    from confluent_kafka import KafkaError, TopicPartition

    from buildkit.errors import UnknownTopic
    from buildkit.kafka import tail_consumer

    try:
        consumer = tail_consumer(settings, topic, per_partition, eof=True, name="bar-gitlab-seed")
    except UnknownTopic:
        # Nothing was ever published there, so nothing to remember; a fresh dev stack
        # starts the webhook before `topics apply`, and deliveries answer 503 until then.
        return []
    try:
        assigned = consumer.assignment()
        pending = {tp.partition for tp in assigned}
        to_read = 0
        for tp in assigned:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=settings.client_timeout_s
            )
            to_read += min(per_partition, max(0, high - low))
        allowed = settings.client_timeout_s * 2 + to_read / _SEED_MIN_RATE
        deadline = time.monotonic() + allowed
        found: list[str] = []
        undecodable = 0
        while pending:
            if stop is not None and stop.is_set():
                raise InterruptedError(f"stopped restoring the seen deliveries from {topic}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not read the last {to_read} records of {topic} within "
                    f"{allowed:.1f}s (partitions {sorted(pending)} left) to restore the "
                    "seen deliveries"
                )
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                key = msg.key() if project_keyed else None
                event_id = _header(msg.headers(), "ce_id") if key is not None else None
                if key is not None and event_id is not None:
                    found.append(f"{key.decode(errors='replace')}:{event_id}")
                    continue
                try:
                    event = decode(msg.value())
                except Exception:
                    undecodable += 1  # not ours to judge here; the archiver keeps it
                    continue
                event_id = getattr(event, "event_id", None)
                if isinstance(event_id, str):
                    found.append(
                        scoped_key(
                            getattr(event, "project_id", None),
                            getattr(event, "project_path", None),
                            event_id,
                        )
                    )
        if undecodable:
            log.warning("%d record(s) of %s could not be decoded; skipped", undecodable, topic)
        return found
    finally:
        consumer.close()


def _header(headers: list[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None
