"""The audit archive against the real broker and Postgres: archive, verify, replay, survive.

Archiver runs cost a consumer-group join (~3 s on the embedded broker), so one
module-scoped archive serves most tests; each tampering test tampers with a
topic of its own. The broker-restart scenario runs a broker of its own.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from buildkit.audit.archiver import ArchiveStats, run_archiver
from buildkit.audit.heartbeat import heartbeat_pid
from buildkit.audit.replay import ArchiveReplay
from buildkit.audit.store import ensure_schema
from buildkit.audit.verify import verify_archive
from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.events import AgentHeartbeat, ReplicaState
from buildkit.dev.broker import start_broker
from buildkit.dev.procs import PidFile, free_port, wait_until
from buildkit.producer import TypedProducer
from buildkit.records import RawRecord
from buildkit.replay import OPEN, Bound, BrokerReplay
from buildkit.settings import Settings
from buildkit.topics import apply_topics

pytestmark = pytest.mark.stack

BUILDKIT = str(Path(sys.executable).parent / "buildkit")


# ----------------------------------------------------------------------
# helpers


@dataclass
class Sent:
    """One produced record and where the broker put it."""

    event_id: str
    key: str
    value: AgentHeartbeat
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = -1


def heartbeat(i: int) -> AgentHeartbeat:
    return AgentHeartbeat(
        agent="audit-test",
        replica_id=f"replica-{i}",
        state=ReplicaState.RUNNING,
        in_flight=i,
        sent_at=datetime.now(UTC).replace(microsecond=(i % 1000) * 1000),
    )


def produce(
    settings: Settings,
    catalog: Catalog,
    topic: str,
    count: int,
    *,
    chunks: int = 1,
    pause_s: float = 0.0,
    partition: int | None = None,
    start: int = 0,
) -> list[Sent]:
    """``count`` heartbeats in ``chunks`` flushed batches, ``pause_s`` apart (distinct times)."""
    producer = TypedProducer(settings, catalog=catalog, source="audit-test")
    sent: list[Sent] = []
    per_chunk = -(-count // chunks)
    for i in range(start, start + count):
        record = Sent("", f"k{i % 11}", heartbeat(i))

        def delivered(err: object, msg: object, record: Sent = record) -> None:
            assert err is None, err
            record.partition = msg.partition()  # type: ignore[attr-defined]
            record.offset = msg.offset()  # type: ignore[attr-defined]
            record.timestamp_ms = msg.timestamp()[1]  # type: ignore[attr-defined]

        record.event_id = producer.produce(
            topic, record.value, record.key, partition=partition, on_delivery=delivered
        )
        sent.append(record)
        if (i - start + 1) % per_chunk == 0:
            producer.flush()
            time.sleep(pause_s)
    producer.flush()
    # Release the client now, not whenever the cycle collector runs: a live producer keeps
    # refreshing metadata, and a restarted Tansu auto-creates the topics it asks about.
    del producer
    gc.collect()
    return sent


def positions(sent: list[Sent]) -> list[tuple[int, int]]:
    """(partition, offset) of each record, sorted."""
    return sorted((s.partition, s.offset) for s in sent)


def rows_of(settings: Settings, topic: str) -> list[tuple[int, int, int, bytes]]:
    """(partition, generation, offset, value) of every archived row of ``topic``, in seq order."""
    with psycopg.connect(settings.database_dsn()) as conn:
        return [
            (p, g, o, bytes(v))
            for p, g, o, v in conn.execute(
                'SELECT partition, generation, "offset", value FROM audit_records '
                "WHERE topic = %s ORDER BY seq",
                (topic,),
            )
        ]


def tamper(settings: Settings, *statements: tuple[str, tuple[object, ...]], how: str) -> None:
    """Run ``statements`` around the append-only trigger, the way a superuser could."""
    with psycopg.connect(settings.database_dsn()) as conn, conn.transaction():
        if how == "disable":
            conn.execute("ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only")
        else:
            conn.execute("SET LOCAL session_replication_role = replica")
        for sql, params in statements:
            conn.execute(sql, params)
        if how == "disable":
            conn.execute("ALTER TABLE audit_records ENABLE TRIGGER audit_records_append_only")


def replayed(replay: ArchiveReplay | BrokerReplay) -> list[RawRecord]:
    try:
        return sorted(replay.records(), key=lambda r: (r.partition, r.offset))
    finally:
        replay.close()


def bar_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BAR_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BAR_DATABASE_URL": settings.database_dsn(),
        "BAR_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "BAR_CLIENT_TIMEOUT_S": str(settings.client_timeout_s),
        "BAR_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "BAR_DATA_DIR": str(data_dir),
        "COLUMNS": "200",
    }


def cli(settings: Settings, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUILDKIT, *args],
        env=bar_env(settings, data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,
        check=False,
    )


# ----------------------------------------------------------------------
# one archive for the module


@dataclass
class Archived:
    prefix: str
    catalog: Catalog
    sent: dict[str, list[Sent]]
    stats: ArchiveStats

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"


@pytest.fixture(scope="module")
def archived(settings: Settings) -> Archived:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    names = ("events", "altered", "deleted", "swapped", "refused")
    catalog = Catalog(
        TopicSpec(f"{prefix}.{name}", AgentHeartbeat, partitions=3 if name == "events" else 2)
        for name in names
    )
    apply_topics(settings, catalog)
    sent = {
        f"{prefix}.events": produce(
            settings, catalog, f"{prefix}.events", 300, chunks=6, pause_s=0.02
        )
    }
    for name in names[1:]:
        sent[f"{prefix}.{name}"] = produce(settings, catalog, f"{prefix}.{name}", 24, chunks=3)
    stats = run_archiver(settings, catalog, idle_timeout_s=2, group=f"{prefix}-archiver")
    return Archived(prefix, catalog, sent, stats)


def test_every_record_is_archived_exactly_once_and_the_chains_verify(
    settings: Settings, archived: Archived
) -> None:
    total = sum(len(s) for s in archived.sent.values())
    assert archived.stats.archived == total
    assert archived.stats.duplicates == 0
    for topic, sent in archived.sent.items():
        rows = rows_of(settings, topic)
        assert sorted((p, o) for p, _, o, _ in rows) == positions(sent)
        assert {g for _, g, _, _ in rows} == {0}
        assert len({p for p, _, _, _ in rows}) > 1  # several partitions, several batches each

    result = verify_archive(settings, list(archived.sent))
    assert result.ok, result.problems
    assert result.rows == total
    assert len(result.chains) == 3 + 4 * 2
    assert result.summary() == f"{total} rows in {len(result.chains)} chains verified"


def test_the_archive_keeps_records_byte_for_byte(settings: Settings, archived: Archived) -> None:
    topic = archived.topic("events")
    from_archive = replayed(ArchiveReplay(settings, topic, OPEN, OPEN))
    from_broker = replayed(BrokerReplay(settings, topic, OPEN, OPEN))

    assert len(from_archive) == 300
    assert from_archive == from_broker  # keys, values, timestamps, headers (order, None) alike
    assert all(r.headers and r.headers[0][0] == "ce_id" for r in from_archive)


def test_rerunning_the_archiver_from_the_start_adds_nothing(
    settings: Settings, archived: Archived
) -> None:
    topic = archived.topic("events")
    before = rows_of(settings, topic)

    # A new group starts from the earliest offset: every record is delivered again.
    again = run_archiver(
        settings,
        Catalog([archived.catalog.get(topic)]),
        idle_timeout_s=2,
        group=f"{archived.prefix}-again",
    )

    assert (again.consumed, again.archived, again.duplicates) == (300, 0, 300)
    assert again.new_generations == 0
    assert rows_of(settings, topic) == before
    assert verify_archive(settings, [topic]).ok


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET value = 'x' WHERE topic = %s",
        "DELETE FROM audit_records WHERE topic = %s",
        "TRUNCATE audit_records",
    ],
)
def test_updates_deletes_and_truncates_are_refused(
    settings: Settings, archived: Archived, statement: str
) -> None:
    topic = archived.topic("refused")
    before = rows_of(settings, topic)
    with (
        psycopg.connect(settings.database_dsn()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
    ):
        conn.execute(statement, (topic,) if "%s" in statement else None)
    assert rows_of(settings, topic) == before


def test_verify_reports_an_altered_value_at_its_offset(
    settings: Settings, archived: Archived, tmp_path: Path
) -> None:
    topic = archived.topic("altered")
    tamper(
        settings,
        (
            "UPDATE audit_records SET value = value || %s WHERE topic = %s AND partition = 1 "
            'AND "offset" = 3',
            (b"!", topic),
        ),
        how="disable",
    )

    result = verify_archive(settings, [topic])

    assert [(p.kind, p.topic, p.partition, p.offset) for p in result.problems] == [
        ("altered", topic, 1, 3)
    ]
    assert [c.ok for c in result.chains] == [True, False]
    run = cli(settings, tmp_path, "audit", "verify", "--topic", topic)
    assert run.returncode == 1, run.stdout
    assert f"altered: {topic}[1] offset 3" in run.stdout
    assert "1 of 2 chains do not verify" in run.stdout
    assert "Traceback" not in run.stdout


def test_verify_reports_a_deleted_row_as_missing(settings: Settings, archived: Archived) -> None:
    topic = archived.topic("deleted")
    tamper(
        settings,
        ('DELETE FROM audit_records WHERE topic = %s AND partition = 0 AND "offset" = 4', (topic,)),
        how="replica",
    )

    result = verify_archive(settings, [topic])

    assert [(p.kind, p.partition, p.offset) for p in result.problems] == [("missing", 0, 4)]


def test_verify_reports_a_swapped_pair_as_reordered(settings: Settings, archived: Archived) -> None:
    topic = archived.topic("swapped")
    with psycopg.connect(settings.database_dsn()) as conn:
        seq: dict[int, int] = dict(
            conn.execute(
                'SELECT "offset", seq FROM audit_records WHERE topic = %s AND partition = 1 '
                'AND "offset" IN (5, 6)',
                (topic,),
            ).fetchall()
        )
    swap = "UPDATE audit_records SET seq = %s WHERE seq = %s"
    tamper(
        settings,
        (swap, (-seq[5], seq[5])),
        (swap, (seq[5], seq[6])),
        (swap, (seq[6], -seq[5])),
        how="disable",
    )

    result = verify_archive(settings, [topic])

    # Offset 6 now sits where offset 5 was: it links to a row stored after it.
    assert [(p.kind, p.partition, p.offset) for p in result.problems] == [("reordered", 1, 6)]


def test_verify_passes_on_an_intact_archive_from_the_cli(
    settings: Settings, archived: Archived, tmp_path: Path
) -> None:
    topic = archived.topic("events")
    run = cli(settings, tmp_path, "audit", "verify", "--topic", topic)
    assert run.returncode == 0, run.stdout
    assert "300 rows in 3 chains verified" in run.stdout


@pytest.mark.parametrize(
    ("start", "end", "partitions"),
    [
        ("open", "open", None),
        ("offset:10", "offset:40", None),
        ("offsets:0:5,2:20", "offsets:0:30,1:12", None),
        ("time:2", "time:4", None),
        ("time:1", "open", [0, 2]),
        ("offset:15", "time:3", None),
        ("open", "offset:0", [1]),
        ("offset:1000", "open", None),
    ],
)
def test_archive_replay_returns_exactly_what_broker_replay_returns(
    settings: Settings,
    archived: Archived,
    start: str,
    end: str,
    partitions: list[int] | None,
) -> None:
    topic = archived.topic("events")
    sent = archived.sent[topic]
    # Chunk boundaries: the time each of the six flushed chunks was stamped at.
    chunk_times = sorted({s.timestamp_ms for s in sent})
    per_chunk = [sent[i * 50].timestamp_ms for i in range(6)]
    assert len(chunk_times) >= 6

    def bound(text: str) -> Bound:
        kind, _, arg = text.partition(":")
        if kind == "offset":
            return Bound("offset", offset=int(arg))
        if kind == "offsets":
            pairs = (x.split(":") for x in arg.split(","))
            return Bound("offset", offsets={int(p): int(o) for p, o in pairs})
        if kind == "time":
            return Bound("time", time_ms=per_chunk[int(arg)])
        return OPEN

    lower, upper = bound(start), bound(end)
    archive = ArchiveReplay(settings, topic, lower, upper, partitions=partitions)
    total = archive.stats.estimated_total
    from_archive = replayed(archive)
    from_broker = replayed(BrokerReplay(settings, topic, lower, upper, partitions=partitions))

    assert from_archive == from_broker
    assert total == len(from_archive)
    expected = [
        s
        for s in sent
        if (partitions is None or s.partition in partitions)
        and _within(s, lower, is_start=True)
        and _within(s, upper, is_start=False)
    ]
    assert sorted((r.partition, r.offset) for r in from_archive) == positions(expected)


def _within(sent: Sent, bound: Bound, *, is_start: bool) -> bool:
    """Timestamps here grow with offsets, so both replays' rules reduce to a plain range."""
    if bound.kind == "offset":
        limit = bound.offset_for(sent.partition)
        if limit is None:
            return True
        return sent.offset >= limit if is_start else sent.offset <= limit
    if bound.kind == "time":
        assert bound.time_ms is not None
        ts = sent.timestamp_ms
        return ts >= bound.time_ms if is_start else ts <= bound.time_ms
    return True


def test_archive_replay_of_an_unarchived_topic_says_so(settings: Settings) -> None:
    from buildkit.errors import UnknownTopic

    with pytest.raises(UnknownTopic, match="no records in the audit archive"):
        ArchiveReplay(settings, f"t-{uuid.uuid4().hex[:8]}.nothing", OPEN, OPEN)


# ----------------------------------------------------------------------
# the broker restarts and forgets everything


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, PidFile, Path]]:
    """A broker of this test's own: (address, pid file, log), stopped afterwards."""
    port = free_port()
    pid_file = PidFile(tmp_path / "tansu.pid")
    log = tmp_path / "tansu.log"
    start_broker("127.0.0.1", port, log, pid_file)
    try:
        yield f"127.0.0.1:{port}", pid_file, log
    finally:
        pid_file.stop()


def test_replay_from_the_archive_after_the_broker_lost_its_memory(
    settings: Settings, own_broker: tuple[str, PidFile, Path], tmp_path: Path, prefix: str
) -> None:
    address, pid_file, log = own_broker
    own = settings.model_copy(update={"bootstrap_servers": address})
    topic = f"{prefix}.lost"
    catalog = Catalog([TopicSpec(topic, AgentHeartbeat, partitions=2)])
    apply_topics(own, catalog)
    sent = produce(own, catalog, topic, 40, chunks=4, pause_s=0.01)
    stats = run_archiver(own, catalog, idle_timeout_s=2, group=f"{prefix}-archiver")
    assert stats.archived == 40

    # The broker restarts on the same address, with nothing: memory storage.
    pid_file.stop()
    start_broker("127.0.0.1", int(address.rsplit(":", 1)[1]), log, pid_file)
    gone = cli(own, tmp_path, "replay", topic, "--out", str(tmp_path / "broker.jsonl"))
    assert gone.returncode != 0
    assert "does not exist" in gone.stdout

    out = tmp_path / "replayed.jsonl"
    args = ["replay", topic, "--source", "archive", "--from", "3", "--to", "15", "--out", str(out)]
    run = cli(own, tmp_path, *args)
    assert run.returncode == 0, run.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {(s.partition, s.offset): s for s in sent if 3 <= s.offset <= 15}
    assert len(lines) == len(expected) > 0
    assert f"replayed {len(expected)} record(s)" in run.stdout
    for line in lines:
        original = expected[(line["partition"], line["offset"])]
        assert line["key"] == original.key
        assert AgentHeartbeat.model_validate(line["value"]) == original.value
        assert line["headers"]["ce_id"] == original.event_id
        assert line["topic"] == topic

    # The new broker's records start at offset 0 again: archived as a new generation,
    # on the same unbroken chain, old rows untouched.
    apply_topics(own, catalog)
    new = produce(own, catalog, topic, 6, partition=0, start=100) + produce(
        own, catalog, topic, 4, partition=1, start=200
    )
    again = run_archiver(own, catalog, idle_timeout_s=2, group=f"{prefix}-archiver")
    assert (again.archived, again.duplicates, again.new_generations) == (10, 0, 2)
    rows = rows_of(own, topic)
    assert len(rows) == 50
    assert sorted((p, o) for p, g, o, _ in rows if g == 1) == positions(new)
    result = verify_archive(own, [topic])
    assert result.ok, result.problems
    assert [c.generations for c in result.chains] == [2, 2]

    # Offsets name the broker's current generation; times cover the whole history.
    latest = replayed(ArchiveReplay(own, topic, Bound("offset", offset=0), OPEN))
    assert sorted((r.partition, r.offset, r.key) for r in latest) == sorted(
        (s.partition, s.offset, s.key.encode()) for s in new
    )
    everything = replayed(ArchiveReplay(own, topic, OPEN, OPEN))
    assert len(everything) == 50
    older = replayed(ArchiveReplay(own, topic, Bound("offset", offset=0), OPEN, generation=0))
    assert sorted((r.partition, r.offset) for r in older) == positions(sent)


# ----------------------------------------------------------------------
# the archiver process: killed mid-stream, restarted, stopped


def test_a_killed_archiver_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path, prefix: str
) -> None:
    topic = f"{prefix}.crash"
    catalog = Catalog([TopicSpec(topic, AgentHeartbeat, partitions=3)])
    apply_topics(settings, catalog)
    group = f"{prefix}-archiver"
    env = bar_env(settings, tmp_path / "bar")
    log_path = tmp_path / "archiver.log"
    with psycopg.connect(settings.database_dsn(), autocommit=True) as conn:
        ensure_schema(conn)  # so the count below works before the archiver made it

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "buildkit.audit", "--group", group, "--topic", topic],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def archived_count() -> int:
        with psycopg.connect(settings.database_dsn()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM audit_records WHERE topic = %s", (topic,)
            ).fetchone()
        return int(row[0]) if row else 0

    enough = threading.Event()
    sent: list[Sent] = []

    def keep_producing() -> None:
        # Chunks of 200 until told to stop: the stream runs before, during and after the kill.
        chunk = 0
        while not enough.is_set():
            sent.extend(produce(settings, catalog, topic, 200, start=chunk * 1000))
            chunk += 1
            time.sleep(0.1)

    first = start()
    producer = threading.Thread(target=keep_producing)
    try:
        producer.start()
        assert wait_until(lambda: archived_count() > 0, 60, interval=0.05), log_path.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = archived_count()

        second = start()
        try:
            time.sleep(1.5)
            enough.set()
            producer.join(60)
            total = len(sent)
            assert wait_until(lambda: archived_count() >= total, 90, interval=0.2), (
                f"{archived_count()} of {total} archived\n{log_path.read_text()}"
            )
            beat = Path(env["BAR_DATA_DIR"]) / "run" / "audit-archiver.heartbeat"
            assert heartbeat_pid(beat) == second.pid
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log_path.read_text()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
    finally:
        enough.set()
        if first.poll() is None:
            first.kill()
            first.wait()
        producer.join(60)

    print(f"\narchiver killed with {killed_at} of {total} rows archived")
    assert 0 < killed_at < total
    with psycopg.connect(settings.database_dsn()) as conn:
        counts = conn.execute(
            'SELECT count(*), count(DISTINCT (partition, "offset")), max(generation) '
            "FROM audit_records WHERE topic = %s",
            (topic,),
        ).fetchone()
    assert counts == (total, total, 0)
    assert sorted((p, o) for p, _, o, _ in rows_of(settings, topic)) == positions(sent)
    assert verify_archive(settings, [topic]).ok
    assert "done:" in log_path.read_text()
