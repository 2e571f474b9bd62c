"""Typed producers (sync and asyncio): events in, Confluent wire format out.

Idempotent with ``acks=all``; every delivery is reported; a full local queue
(``BufferError``) is backpressure — the producer serves delivery reports until
there is room — never a lost record; ``close`` flushes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from buildkit.catalog import Catalog, default_catalog
from buildkit.contracts.base import Event
from buildkit.envelope import HeaderFactory, Headers
from buildkit.errors import DeliveryError
from buildkit.kafka import require_topics
from buildkit.serde import SerdeRegistry, TopicSerde
from buildkit.settings import Settings

DeliveryCallback = Callable[[KafkaError | None, Message], None]

PRODUCER_DEFAULTS: dict[str, Any] = {
    # Only `buildkit topics apply` creates topics (from the catalog); a producer
    # outliving a broker restart must not re-create them with broker defaults.
    "allow.auto.create.topics": False,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "log_level": 0,
}


@dataclass
class DeliveryStats:
    """What the broker acknowledged, and what it did not."""

    acked: int = 0
    failed: int = 0
    first_error: str | None = None


class TypedProducer:
    """Produces :class:`Event` values to catalog topics.

    ``produce`` is asynchronous like librdkafka's: call ``flush`` (or use the
    producer as a context manager) to wait for every acknowledgement.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog | None = None,
        serdes: SerdeRegistry | None = None,
        source: str | None = None,
        **kafka_overrides: Any,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.serdes = serdes or SerdeRegistry(settings, self.catalog)
        self.headers = HeaderFactory(source or settings.source)
        self.stats = DeliveryStats()
        conf = settings.kafka_config(**{**PRODUCER_DEFAULTS, **kafka_overrides})
        self._producer = Producer(conf)
        self._max_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self._checked: set[str] = set()
        self._routes: dict[str, tuple[TopicSerde, str]] = {}

    # -- sending -----------------------------------------------------------------
    def check_topics(self, topics: list[str]) -> None:
        """Fail fast (within the client timeout) if the broker is down or a topic is missing."""
        require_topics(self._producer, self.settings, topics)
        self._checked.update(topics)

    def produce(
        self,
        topic: str,
        value: Event,
        key: str | None = None,
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        event_id: str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> str:
        """Queue one event; return its CloudEvents id."""
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        serde, ce_type = route
        payload = serde.encode(value)
        record_headers = self.headers.build(
            ce_type,
            event_id=event_id,
            correlation_id=correlation_id,
            traceparent=traceparent,
            extra=headers,
        )
        key_bytes = None if key is None else key.encode()
        if partition is None and on_delivery is None:
            # The common case, inlined: this is the per-record hot path.
            try:
                self._producer.produce(
                    topic,
                    payload,
                    key_bytes,
                    headers=record_headers,  # type: ignore[arg-type]
                    on_delivery=self._delivered,
                )
            except (BufferError, KafkaException):
                self.produce_raw(topic, payload, key_bytes, record_headers)  # waits or explains
            else:
                self._producer.poll(0)
        else:
            self.produce_raw(topic, payload, key_bytes, record_headers, partition, on_delivery)
        return record_headers[0][1].decode()

    def _route(self, topic: str) -> tuple[TopicSerde, str]:
        """Check ``topic`` once (broker, catalog, registry) and keep what produce needs."""
        if topic not in self._checked:
            self.check_topics([topic])
        serde = self.serdes.for_topic(topic)
        route = self._routes[topic] = (serde, serde.model.avro_name())
        return route

    def produce_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue pre-encoded bytes, waiting for room when the local queue is full."""
        callback = self._delivered if on_delivery is None else self._chain(on_delivery)
        kwargs: dict[str, Any] = {"partition": partition} if partition is not None else {}
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=callback,
                    **kwargs,
                )
                break
            except BufferError:
                # Backpressure: serve delivery reports until the queue drains.
                self._producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    size = len(value or b"") + len(key or b"")
                    raise DeliveryError(
                        f"record for topic {topic} is {size} bytes, over the "
                        f"{self._max_bytes}-byte limit (message.max.bytes); nothing was sent "
                        "for it"
                    ) from exc
                raise DeliveryError(f"cannot produce to {topic}: {err.str()}") from exc
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.acked += 1
        else:
            self.stats.failed += 1
            if self.stats.first_error is None:
                self.stats.first_error = f"{msg.topic()}: {err.str()}"

    def _chain(self, user: DeliveryCallback) -> DeliveryCallback:
        def both(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg)
            user(err, msg)

        return both

    # -- waiting -----------------------------------------------------------------
    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports."""
        served: int = self._producer.poll(timeout)
        return served

    def flush(self, timeout: float | None = None) -> DeliveryStats:
        """Wait until every queued record is acknowledged; raise if any failed or timed out."""
        limit = self.settings.client_timeout_s * 4 if timeout is None else timeout
        remaining = self._producer.flush(limit)
        if remaining:
            raise DeliveryError(
                f"{remaining} record(s) not acknowledged by {self.settings.bootstrap_servers} "
                f"within {limit:g}s"
            )
        if self.stats.failed:
            raise DeliveryError(
                f"{self.stats.failed} record(s) were not delivered; first error: "
                f"{self.stats.first_error}"
            )
        return self.stats

    def close(self) -> None:
        """Flush; the producer may not be used afterwards."""
        self.flush()

    def __enter__(self) -> TypedProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._producer.flush(self.settings.client_timeout_s)


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int
    event_id: str


class AsyncTypedProducer:
    """asyncio face of :class:`TypedProducer`: ``await produce(...)`` returns the delivery."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._sync = TypedProducer(settings, **kwargs)
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="bar-producer-poll", daemon=True
        )
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._sync.poll(0.1)

    async def produce(
        self, topic: str, value: Event, key: str | None = None, **kwargs: Any
    ) -> Delivery:
        """Send one event and wait for the broker's acknowledgement."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        # The id is fixed before sending: the acknowledgement may arrive first.
        event_id: str = kwargs.pop("event_id", None) or self._sync.headers.new_id()

        def settle(err: KafkaError | None, msg: Message) -> None:
            if future.done():
                return
            if err is not None:
                future.set_exception(DeliveryError(f"{topic}: {err.str()}"))
            else:
                future.set_result(
                    Delivery(topic, msg.partition() or 0, msg.offset() or 0, event_id)
                )

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(settle, err, msg)

        # check_topics and registry lookups block; keep them off the event loop.
        await asyncio.to_thread(
            self._sync.produce,
            topic,
            value,
            key,
            event_id=event_id,
            on_delivery=on_delivery,
            **kwargs,
        )
        return await future

    async def flush(self) -> DeliveryStats:
        """Wait for every outstanding acknowledgement."""
        return await asyncio.to_thread(self._sync.flush)

    async def close(self) -> None:
        """Flush and stop the background poller."""
        try:
            await self.flush()
        finally:
            self._stop.set()
            await asyncio.to_thread(self._poller.join)

    async def __aenter__(self) -> AsyncTypedProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
