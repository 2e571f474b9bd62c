"""``POST /webhooks/gitlab``: GitLab deliveries in, one :class:`GitLabEvent` each on
``bar.gitlab.events`` (keyed by project id), answered only once the broker has it.

The order of checks, and what each answers:

1. ``X-Gitlab-Token`` matches no configured secret at all: **401**, empty body
   (nothing is read; see :mod:`connectors.gitlab.auth`).
2. no ``X-Gitlab-Event`` header: **400** naming it.
3. ``Content-Length`` over the body limit, or more bytes than that actually sent (the
   body is streamed and counted, never buffered past the limit): **413** saying which
   limit applied. The limit is the smaller of ``BAR_GITLAB_MAX_BODY_BYTES`` and what
   fits in one Kafka record (the producer's ``message.max.bytes`` less 16 KiB for the
   record's fields and framing); the message says how to raise it.
4. body not JSON, or JSON but not an object: **400** saying which.
5. the token is not the secret of the body's project (or the global one when the
   project has none of its own): **401**, empty body.
6. the seen deliveries are not restored yet (start-up, broker down): **503** with
   ``Retry-After`` at once, or after waiting at most ``seed_wait_s`` for a restore in
   progress.
7. the delivery's key (``Idempotency-Key``, else ``X-Gitlab-Event-UUID``), within the
   delivery's project, was published already, or is being published by a concurrent
   request: **200**, ``"duplicate": true``, no second event
   (:mod:`connectors.gitlab.idempotency`).
8. normalized (:func:`~connectors.gitlab.normalize.normalize`; every kind, known or
   not, is kept) and produced; **200** after the broker's acknowledgement, else
   **503** with ``Retry-After`` and the key left unseen, so GitLab's retry publishes
   it. A record over the producer's ``message.max.bytes`` is **413**: retrying
   cannot help it.

The seen-set is restored in the background from the topic's tail (the last
``seed_records`` records of each partition), started with the app and tried again
until it works. ``GET /healthz`` answers 200 once it is (the readiness the dev stack
waits for), 503 before.

The event's ``event_id`` is the delivery key (a new uuid4 when there is none), and
it is also the record's CloudEvents ``ce_id``: should a record be acknowledged after
the 503 for it was sent (an ack later than the publish timeout), the retry's record
carries the same id, so consumers can still tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from buildkit.catalog import Catalog, default_catalog
from buildkit.contracts import GitLabEvent
from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from connectors.gitlab.auth import TokenChecker
from connectors.gitlab.idempotency import (
    MAX_KEY_LENGTH,
    SEED_RECORDS,
    Deduplicator,
    delivery_key,
    recent_delivery_keys,
    scoped_key,
)
from connectors.gitlab.normalize import normalize
from connectors.gitlab.stack import WEBHOOK_PATH

__all__ = ["GITLAB_EVENTS", "KafkaPublisher", "Publisher", "create_app"]

log = logging.getLogger(__name__)

GITLAB_EVENTS = "bar.gitlab.events"
# Bodies above this are parsed off the event loop, so one big push does not stall
# every other delivery's answer.
_PARSE_IN_THREAD_BYTES = 64 * 1024
# Room for the record's own framing and headers next to raw_json and the fields.
_RECORD_OVERHEAD_BYTES = 16 * 1024
# The producer's settings for this connector: latency matters more than batching
# (each delivery waits for its own ack), and an ack that does not come must fail
# within GitLab's webhook timeout (10 s by default) so the answer is a 503, not a hang.
LINGER_MS = 1


class Publisher(Protocol):
    """Where accepted deliveries go. :class:`KafkaPublisher` is the real one; a test or a
    benchmark baseline may pass another (e.g. one that publishes nothing)."""

    topic: str

    async def start(self) -> None:
        """Prepare (connect, warm caches); called once at app start-up."""

    async def recent_delivery_keys(self, per_partition: int) -> list[str]:
        """The :func:`~connectors.gitlab.idempotency.scoped_key` of recently published
        events (the last ``per_partition`` records of each partition), to seed the
        de-duplication."""

    async def publish(self, event: GitLabEvent) -> Any:
        """Publish one event; return once the broker acknowledged it, raise otherwise."""

    async def close(self) -> None:
        """Flush and release; called once at app shutdown."""


class KafkaPublisher:
    """Publishes to ``topic`` with :class:`~buildkit.producer.AsyncTypedProducer`."""

    def __init__(
        self, settings: Settings, topic: str = GITLAB_EVENTS, catalog: Catalog | None = None
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.catalog = catalog or default_catalog()
        self.spec = self.catalog.get(topic)
        self.ack_timeout_s = settings.client_timeout_s
        conf = settings.kafka_config()
        self.max_record_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self._producer: Any = None
        self._serdes: Any = None
        self._stop = threading.Event()  # ends a seeding read in its thread at close

    async def start(self) -> None:
        from buildkit.producer import AsyncTypedProducer
        from buildkit.serde import SerdeRegistry

        self._serdes = SerdeRegistry(self.settings, self.catalog)
        self._producer = AsyncTypedProducer(
            self.settings,
            catalog=self.catalog,
            serdes=self._serdes,
            source="gitlab-webhook",
            **{
                "linger.ms": LINGER_MS,
                "message.timeout.ms": int(self.ack_timeout_s * 1000),
            },
        )
        # Registry lookup (or registration) now, not on the first delivery.
        with contextlib.suppress(BuildKitError):
            await asyncio.to_thread(self._serdes.for_topic, self.topic)

    async def recent_delivery_keys(self, per_partition: int) -> list[str]:
        serde = await asyncio.to_thread(self._serdes.for_topic, self.topic)
        return await asyncio.to_thread(
            recent_delivery_keys,
            self.settings,
            self.topic,
            serde.decode,
            per_partition,
            project_keyed=self.spec.key_field == "project_id",
            stop=self._stop,
        )

    async def publish(self, event: GitLabEvent) -> Any:
        # The producer's first send to the topic checks it (metadata, up to the client
        # timeout) before message.timeout.ms starts: allow both, plus a little.
        return await asyncio.wait_for(
            self._producer.produce(
                self.topic, event, self.spec.key_for(event), event_id=event.event_id
            ),
            timeout=self.ack_timeout_s * 2 + 1,
        )

    async def close(self) -> None:
        self._stop.set()
        if self._producer is None:
            return
        try:
            await self._producer.close()
        except BuildKitError as exc:  # e.g. failed deliveries counted earlier: logged there
            log.warning("closing the producer: %s", exc)


class _Problem(Exception):
    """A client error with a status and a message naming the header or field."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _State:
    """What one app instance keeps between requests."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        tokens: TokenChecker,
        capacity: int,
        seed_records: int,
        seed_wait_s: float,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.tokens = tokens
        self.dedup = Deduplicator(capacity)
        self.seed_records = seed_records
        self.seed_wait_s = seed_wait_s
        self.max_record = getattr(publisher, "max_record_bytes", None)
        self.max_body, self.body_limit_source = body_limit(settings, self.max_record)
        self.seed_error: str | None = None
        self._seeded = asyncio.Event()
        self._seeder: asyncio.Task[None] | None = None

    @property
    def seeded(self) -> bool:
        return self._seeded.is_set()

    def start_seeding(self) -> None:
        """Restore the seen-set in the background, trying again until it works."""
        self._seeder = asyncio.get_running_loop().create_task(self._seed_until_done())

    async def stop_seeding(self) -> None:
        if self._seeder is not None:
            self._seeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._seeder

    async def _seed_until_done(self) -> None:
        backoff = 0.5
        while True:
            try:
                keys = await self.publisher.recent_delivery_keys(self.seed_records)
            except (BuildKitError, TimeoutError, OSError) as exc:  # InterruptedError: OSError
                self.seed_error = str(exc)
                log.warning(
                    "cannot restore seen deliveries from %s (again in %.1fs): %s",
                    self.topic,
                    backoff,
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self.dedup.mark_seen(keys)
            self.seed_error = None
            self._seeded.set()
            log.info("restored %d seen delivery key(s) from %s", len(self.dedup), self.topic)
            return

    async def ready(self) -> bool:
        """Seeded? Waits at most ``seed_wait_s`` for a restore in progress."""
        if self._seeded.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._seeded.wait()), self.seed_wait_s)
        return self._seeded.is_set()

    @property
    def topic(self) -> str:
        return self.publisher.topic


def body_limit(settings: Settings, max_record: int | None) -> tuple[int, str]:
    """The largest body accepted, and which limit that is, with how to raise it: the
    smaller of ``BAR_GITLAB_MAX_BODY_BYTES`` and what fits in one Kafka record."""
    setting = settings.gitlab_max_body_bytes
    if max_record is not None and max_record - _RECORD_OVERHEAD_BYTES < setting:
        return max_record - _RECORD_OVERHEAD_BYTES, (
            f"the largest Kafka record: message.max.bytes {max_record} less "
            f"{_RECORD_OVERHEAD_BYTES} bytes for the record's fields; raise message.max.bytes "
            "of the producer and of the broker (BAR_KAFKA_PROPERTIES) and "
            "BAR_GITLAB_MAX_BODY_BYTES together"
        )
    return setting, "BAR_GITLAB_MAX_BODY_BYTES"


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    topic: str = GITLAB_EVENTS,
    catalog: Catalog | None = None,
    tokens: TokenChecker | None = None,
    dedup_capacity: int = 100_000,
    seed_records: int = SEED_RECORDS,
    seed_wait_s: float = 3.0,
) -> FastAPI:
    """The webhook app. ``publisher`` defaults to a :class:`KafkaPublisher` on ``topic``
    (``catalog`` must declare it); ``tokens`` to the secrets of ``settings`` — which
    raises ConfigError when none is configured (see :mod:`connectors.gitlab.auth`).
    ``dedup_capacity`` bounds the seen-set (keys); the start-up seeding reads the last
    ``seed_records`` records of each partition, in the background; a delivery (or
    ``/healthz``) waits at most ``seed_wait_s`` for it, then answers 503."""
    tokens = tokens or TokenChecker.from_settings(settings)
    publisher = publisher or KafkaPublisher(settings, topic, catalog)
    state = _State(settings, publisher, tokens, dedup_capacity, seed_records, seed_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        state.start_seeding()
        log.info(
            "GitLab webhook → %s; %s; bodies up to %d bytes (%s)",
            state.topic,
            tokens.describe,
            state.max_body,
            state.body_limit_source,
        )
        try:
            yield
        finally:
            await state.stop_seeding()
            await publisher.close()

    app = FastAPI(
        title="Agent BuildKit GitLab webhook",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.webhook = state

    @app.get("/healthz")
    async def healthz() -> Response:
        if not await state.ready():
            detail = state.seed_error or "restoring the seen deliveries from the topic"
            return JSONResponse(
                {"status": "not ready", "topic": state.topic, "detail": detail},
                503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ok", "topic": state.topic, "seen": len(state.dedup)})

    @app.post(WEBHOOK_PATH)
    async def receive(request: Request) -> Response:
        try:
            return await _receive(state, request)
        except _Problem as exc:
            headers = {"Connection": "close"} if exc.status == 413 else None
            return JSONResponse({"detail": exc.detail}, exc.status, headers=headers)

    return app


async def _receive(state: _State, request: Request) -> Response:
    headers = request.headers
    token = headers.get("X-Gitlab-Token")
    if not state.tokens.may_match(token):
        return Response(status_code=401)
    event_header = (headers.get("X-Gitlab-Event") or "").strip()
    if not event_header:
        raise _Problem(400, "missing X-Gitlab-Event header: GitLab names the event kind in it")
    key, key_header = delivery_key(headers)
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise _Problem(400, f"{key_header} header is longer than {MAX_KEY_LENGTH} characters")

    body = await _read_body(request, state.max_body, state.body_limit_source)
    if len(body) > _PARSE_IN_THREAD_BYTES:
        payload = await asyncio.to_thread(_parse, body)
    else:
        payload = _parse(body)
    project = payload.get("project")
    project = project if isinstance(project, dict) else {}
    project_id = project.get("id", payload.get("project_id"))
    project_path = project.get("path_with_namespace", payload.get("path_with_namespace"))
    if not state.tokens.allows(token, project_id, project_path):
        return Response(status_code=401)

    if not await state.ready():
        return _unavailable(state, "the deliveries seen already are not restored from it yet")

    event_id = key or str(uuid.uuid4())
    try:
        event = normalize(event_header, payload, event_id=event_id, received_at=datetime.now(UTC))
    except ValueError as exc:
        raise _Problem(400, str(exc)) from exc
    if state.max_record is not None:
        size = len(event.raw_json.encode()) + _RECORD_OVERHEAD_BYTES
        if size > state.max_record:
            raise _Problem(
                413,
                f"the event would be a {size}-byte Kafka record, over the producer's "
                f"{state.max_record}-byte message.max.bytes: raise message.max.bytes of the "
                "producer and of the broker (BAR_KAFKA_PROPERTIES)",
            )

    # Scoped by the project the token was checked for: another project's token holder
    # cannot mark this project's key as seen.
    seen_key = None if key is None else scoped_key(event.project_id, event.project_path, key)
    try:
        outcome = await state.dedup.once(seen_key, lambda: state.publisher.publish(event))
    except (BuildKitError, TimeoutError) as exc:
        log.warning("delivery %s (%s) not acknowledged: %s", event_id, event.kind, exc)
        return _unavailable(state, "the broker did not acknowledge the event")
    return JSONResponse(
        {
            "event_id": event_id,
            "kind": event.kind,
            "duplicate": outcome.duplicate,
            "topic": state.topic,
        }
    )


def _unavailable(state: _State, why: str) -> Response:
    # No broker address or stack trace: GitLab shows this body to project maintainers.
    return JSONResponse(
        {"detail": f"{state.topic}: {why}; nothing was recorded — retry the delivery"},
        503,
        headers={"Retry-After": "5"},
    )


async def _read_body(request: Request, limit: int, source: str) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes
    (``source``: which limit that is, and how to raise it)."""
    declared = request.headers.get("Content-Length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            shown = f"{declared!r:.40}"
            raise _Problem(400, f"Content-Length header is not a number: {shown}") from None
        if length > limit:
            raise _Problem(413, f"body of {length} bytes is over the {limit}-byte limit ({source})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Problem(413, f"body is over the {limit}-byte limit ({source})")
    return bytes(body)


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise _Problem(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _Problem(400, f"body must be a JSON object, got a JSON {_json_type(payload)}")
    return payload


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN/Infinity, which are not JSON and could not be written back.
    raise ValueError(f"{name} is not a JSON value")


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
