"""(d) Audit archive throughput, against consume + COPY without the hash chain.

* ``archiver`` — ``buildkit.audit.archiver.run_archiver`` over a catalog of one
  pre-filled topic, in a fresh consumer group, stopping after ``n`` records. Its
  rate is timed from the first archived row becoming visible in
  ``audit_records`` to the last one (a side thread polls the row count every
  50 ms), so the consumer-group join (3-6 s on Tansu) is excluded; the wall time
  including the join is kept in the JSON too.
* ``consume_copy`` — baseline: an assigned ``Consumer`` reading the same
  records, headers encoded the archive's way, one ``COPY`` into a scratch table
  with the archive's columns and indexes but no hash columns, committed per
  1000-record batch. Timed from the first batch received to the last commit.
* ``consume_hash_copy`` (info) — the same plus the archive's SHA-256 chain
  (``record_hash`` per record) into ``prev_hash``/``hash`` columns: the hash
  chain's own cost, apart from the archiver's SQL (advisory lock, chain-head
  query, sequence allocation, ``unnest`` insert) and its Kafka offset commits.

Each run archives its own freshly pre-filled topic: the archive keeps one row per
(topic, partition, generation, offset), so re-reading a topic would archive
nothing new.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from typing import Any, cast

from confluent_kafka import Producer

from bench.bench_consume import assigned_consumer
from bench.payloads import Payloads
from bench.report import BenchResult, PathResult, Run, run_interleaved
from bench.stack import delete_topics, fresh_topic
from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.events import AgentTask
from buildkit.db import connect
from buildkit.producer import PRODUCER_DEFAULTS
from buildkit.records import HeaderList
from buildkit.settings import Settings

SCRATCH = "bench_archive_scratch"
POLL_S = 0.05


def archiver_available() -> bool:
    """True when ``buildkit.audit.archiver`` can be imported."""
    try:
        return importlib.util.find_spec("buildkit.audit.archiver") is not None
    except ModuleNotFoundError:
        return False


def prefilled_topic(settings: Settings, payloads: Payloads, wire: list[bytes]) -> str:
    """A fresh topic holding every payload (raw produce of the typed producer's bytes)."""
    topic = fresh_topic(settings, "archive", AgentTask)
    producer = Producer(settings.kafka_config(**PRODUCER_DEFAULTS))
    for value, key, headers in zip(wire, payloads.key_bytes, payloads.headers, strict=True):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"prefill of {topic} not acknowledged")
    return topic


class RowWatcher:
    """Polls how many rows of ``topic`` the archive holds, noting when they first
    appear and when they reach ``n``."""

    def __init__(self, settings: Settings, table: str, topic: str, n: int) -> None:
        self._settings, self._table, self._topic, self._n = settings, table, topic, n
        self.first_at: float | None = None
        self.first_count = 0
        self.done_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-row-watcher", daemon=True)

    def __enter__(self) -> RowWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        query = f"SELECT count(*) FROM {self._table} WHERE topic = %s"
        with connect(self._settings) as conn:
            while not self._stop.is_set():
                exists = conn.execute("SELECT to_regclass(%s)", (self._table,)).fetchone()
                if exists is None or exists[0] is None:
                    time.sleep(POLL_S)
                    continue
                row = conn.execute(query, (self._topic,)).fetchone()
                count = int(row[0]) if row else 0
                now = time.perf_counter()
                if count and self.first_at is None:
                    self.first_at, self.first_count = now, count
                if count >= self._n:
                    self.done_at = now
                    return
                time.sleep(POLL_S)

    def wait_done(self, timeout: float) -> None:
        self._thread.join(timeout)


def run_archiver_once(
    settings: Settings, payloads: Payloads, wire: list[bytes], walls: list[float]
) -> Run:
    from buildkit.audit.archiver import run_archiver
    from buildkit.audit.store import TABLE

    n = len(payloads)
    topic = prefilled_topic(settings, payloads, wire)
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=1)])
    try:
        with RowWatcher(settings, TABLE, topic, n) as watcher:
            start = time.perf_counter()
            run_archiver(
                settings,
                catalog,
                idle_timeout_s=30,
                max_records=n,
                group=f"bench-archiver-{uuid.uuid4().hex[:8]}",
            )
            watcher.wait_done(30)
            walls.append(time.perf_counter() - start)
        if watcher.first_at is None or watcher.done_at is None:
            raise RuntimeError(f"the archiver did not archive all {n} records of {topic}")
        # Rows visible at the first sighting were archived before the clock started.
        return Run(watcher.done_at - watcher.first_at, n - watcher.first_count)
    finally:
        delete_topics(settings, [topic])


def ensure_scratch(settings: Settings) -> None:
    """The baselines' table: the archive's columns and indexes; the hash columns stay
    empty on the unhashed baseline."""
    with connect(settings) as conn:
        conn.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {SCRATCH} (
                seq          bigserial PRIMARY KEY,
                topic        text NOT NULL,
                partition    integer NOT NULL,
                generation   integer NOT NULL DEFAULT 0,
                "offset"     bigint NOT NULL,
                timestamp_ms bigint NOT NULL,
                key          bytea,
                value        bytea,
                headers      bytea NOT NULL,
                prev_hash    bytea,
                hash         bytea,
                archived_at  timestamptz NOT NULL DEFAULT now(),
                UNIQUE (topic, partition, generation, "offset")
            );
            CREATE INDEX IF NOT EXISTS {SCRATCH}_time ON {SCRATCH} (topic, timestamp_ms);
            CREATE INDEX IF NOT EXISTS {SCRATCH}_chain ON {SCRATCH} (topic, partition, seq);
            """
        )


def _chain_hasher() -> Any:
    from buildkit.audit.chain import GENESIS, record_hash

    state = {"prev": GENESIS}

    def link(
        topic: str, partition: int, offset: int, ts: int, key: Any, value: Any, headers: bytes
    ):
        prev = state["prev"]
        digest = record_hash(prev, topic, partition, 0, offset, ts, key, value, headers)
        state["prev"] = digest
        return prev, digest

    return link


def run_consume_copy(
    settings: Settings, payloads: Payloads, wire: list[bytes], *, hashed: bool = False
) -> Run:
    n = len(payloads)
    topic = prefilled_topic(settings, payloads, wire)
    from buildkit.audit.chain import encode_headers

    link = _chain_hasher() if hashed else None
    columns = 'topic, partition, "offset", timestamp_ms, key, value, headers'
    if hashed:
        columns += ", prev_hash, hash"
    copy_sql = f"COPY {SCRATCH} ({columns}) FROM STDIN"
    consumer = assigned_consumer(settings, topic)
    try:
        with connect(settings, autocommit=False) as conn:
            seen = 0
            start: float | None = None
            deadline = time.monotonic() + 120
            while seen < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consume of {topic}: {seen} of {n} in 120s")
                batch = consumer.consume(num_messages=1000, timeout=1.0)
                if not batch:
                    continue
                if start is None:
                    start = time.perf_counter()
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    for msg in batch:
                        if (err := msg.error()) is not None:
                            raise RuntimeError(err.str())
                        row: tuple[Any, ...] = (
                            topic,
                            msg.partition(),
                            msg.offset(),
                            msg.timestamp()[1],
                            msg.key(),
                            msg.value(),
                            encode_headers(cast(HeaderList, msg.headers() or [])),
                        )
                        if link is not None:
                            row += link(*row)
                        copy.write_row(row)
                conn.commit()
                seen += len(batch)
            assert start is not None
            return Run(time.perf_counter() - start, seen)
    finally:
        consumer.close()
        delete_topics(settings, [topic])


def bench_archive(
    settings: Settings, payloads: Payloads, wire: list[bytes], repeats: int
) -> BenchResult:
    """Run the archiver and its baseline ``repeats`` times each, interleaved."""
    parameters = {
        "records": len(payloads),
        "repeats": repeats,
        "event": "AgentTask",
        "partitions": 1,
        "timing": "archiver: first archived row visible → last row visible (polled every "
        f"{POLL_S * 1000:.0f} ms); baseline: first batch received → last COPY committed",
    }
    paths = {
        "archiver": PathResult(
            "archiver",
            "run_archiver(catalog of one topic, max_records=n) in a fresh group: consume, "
            "canonical header encoding, SHA-256 hash chain, insert into audit_records; "
            "group join excluded from the rate",
        ),
        "consume_copy": PathResult(
            "consume_copy",
            "assigned Consumer + headers encoded the archive's way + COPY into a scratch table "
            "with the archive's columns/indexes minus the hash columns, commit per 1000; "
            "no hashing, no Kafka offset commits",
            role="baseline",
        ),
        "consume_hash_copy": PathResult(
            "consume_hash_copy",
            "as consume_copy, plus the archive's SHA-256 chain (record_hash per record) and the "
            "prev_hash/hash columns: the hash chain's own cost, without the archiver's SQL",
            role="info",
        ),
    }
    result = BenchResult(
        name="archive",
        title="Audit archiver vs consume + COPY without the hash chain",
        parameters=parameters,
        paths=paths,
        goal_text="none set by the issue; archiver/consume_copy is the cost of archiving "
        "with the hash chain, consume_hash_copy/consume_copy the hash chain's own share",
    )
    if not archiver_available():
        result.status = "not available"
        result.notes.append(
            "buildkit.audit.archiver is missing in this tree; re-run `make bench` once it exists."
        )
        return result
    ensure_scratch(settings)
    walls: list[float] = []
    runners = {
        "archiver": lambda: run_archiver_once(settings, payloads, wire, walls),
        "consume_copy": lambda: run_consume_copy(settings, payloads, wire),
        "consume_hash_copy": lambda: run_consume_copy(settings, payloads, wire, hashed=True),
    }
    run_interleaved(runners, repeats, paths)
    parameters["archiver_wall_s_including_group_join"] = [round(w, 2) for w in walls]
    return result
