"""``buildkit demo`` / ``make demo``: the event backbone end to end on the embedded stack.

Brings the stack up, applies the topic catalog, registers the contracts, produces a
few hundred realistic events in three timed phases, consumes them back, replays the
middle phase's time window from the broker and from the audit archive (the two must
agree record for record), verifies the archive's hash chains, and prints a summary.
Every check is real; any failure makes the demo exit non-zero.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Message
from rich.console import Console
from rich.table import Table

from buildkit import db
from buildkit.catalog import Catalog, default_catalog
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.base import Event
from buildkit.demo_events import DemoBatch, gitlab_events, heartbeats, registrations, workflow_runs
from buildkit.errors import BuildKitError
from buildkit.producer import TypedProducer
from buildkit.records import RawRecord
from buildkit.replay import Bound, BrokerReplay
from buildkit.settings import Settings

RESULTS = "bar.tasks.results"


@dataclass
class Check:
    """One demo check and whether it held."""

    name: str
    ok: bool
    detail: str


@dataclass
class DemoReport:
    """What the demo did, for the summary."""

    produced: Counter[str] = field(default_factory=Counter)
    consumed: Counter[str] = field(default_factory=Counter)
    archived: Counter[str] = field(default_factory=Counter)
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return all(check.ok for check in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        """Record a check."""
        self.checks.append(Check(name, ok, detail))


class Demo:
    """The demo's steps, each printing what it does."""

    def __init__(
        self, settings: Settings, console: Console, *, runs: int = 30, seed: int = 7
    ) -> None:
        self.settings = settings
        self.console = console
        self.catalog: Catalog = default_catalog()
        self.runs = runs
        self.rng = random.Random(seed)  # noqa: S311 — repeatable demo data, not secrets
        self.report = DemoReport()
        self.ids: set[str] = set()
        self.positions: set[tuple[str, int, int]] = set()
        self.started_ms = int(time.time() * 1000)
        self.out_dir = settings.data_dir / "demo"

    def step(self, title: str) -> float:
        """Announce a step; returns its start time."""
        self.console.print(f"[bold cyan]▸[/bold cyan] {title}")
        return time.perf_counter()

    def done(self, name: str, began: float, message: str) -> None:
        """Close a step with its duration."""
        seconds = time.perf_counter() - began
        self.report.timings[name] = seconds
        self.console.print(f"  [green]✓[/green] {message} [dim]({seconds:.2f} s)[/dim]")

    # -- steps ---------------------------------------------------------------------------
    def stack_up(self) -> None:
        """Start (or find running) the embedded stack."""
        from buildkit.dev.stack import Stack, stack_parts

        began = self.step(
            "embedded stack: Tansu broker, Postgres + pgvector, schema registry, audit archiver"
        )
        states = Stack(stack_parts(self.settings)).up()
        for state in states:
            self.console.print(f"    {state.part.name:<16} {state.part.address}  {state.outcome}")
        self.done("stack", began, "stack answering")

    def topics_and_schemas(self) -> None:
        """Apply the catalog and register every contract."""
        from buildkit.contracts.registration import default_subjects, register_contracts
        from buildkit.serde import registry_client
        from buildkit.topics import apply_topics

        began = self.step("topics apply + schemas register")
        changes = apply_topics(self.settings, self.catalog)
        created = sum(1 for c in changes if c.kind == "created")
        ids = register_contracts(
            registry_client(self.settings),
            default_subjects(),
            registry_url=self.settings.schema_registry_url,
        )
        self.done(
            "setup",
            began,
            f"{len(changes)} topics ({created} created), {len(ids)} subjects registered "
            f"({len(set(ids.values()))} distinct schemas)",
        )

    def produce(self) -> tuple[int, int]:
        """Produce three phases; return the time window (ms) of the middle one."""
        began = self.step(
            "produce: registrations + GitLab events | workflow tasks + results | heartbeats"
        )
        now = datetime.now(UTC)
        with TypedProducer(self.settings, catalog=self.catalog, source="buildkit-demo") as producer:
            self._send(producer, registrations(now))
            self._send(producer, gitlab_events(now, self.runs, self.rng))
            producer.flush()
            time.sleep(0.02)
            window_start = int(time.time() * 1000)
            runs = workflow_runs(now, self.runs, self.rng)
            self._send(producer, runs)
            producer.flush()
            window_end = int(time.time() * 1000)
            time.sleep(0.02)
            self._send(producer, heartbeats(now, self.runs * 3, self.rng))
            stats = producer.flush()
        self.window_results = runs.count(RESULTS)
        total = sum(self.report.produced.values())
        self.report.check("produced", stats.acked == total, f"{stats.acked}/{total} acknowledged")
        self.done(
            "produce",
            began,
            f"{stats.acked} events acknowledged on {len(self.report.produced)} topics",
        )
        return window_start, window_end

    def _send(self, producer: TypedProducer, batch: DemoBatch) -> None:
        def delivered(err: object, msg: Message) -> None:
            if err is None:
                self.positions.add((msg.topic() or "", msg.partition() or 0, msg.offset() or 0))

        for topic, event in batch.items:
            assert isinstance(event, Event)
            spec = self.catalog.get(topic)
            self.ids.add(producer.produce(topic, event, spec.key_for(event), on_delivery=delivered))
            self.report.produced[topic] += 1

    def consume(self) -> None:
        """Read every demo event back in a fresh consumer group."""
        began = self.step("consume: a new consumer group reads every demo event back")
        topics = sorted(self.report.produced)
        wanted = sum(self.report.produced.values())
        seen: set[str] = set()

        def handle(record: ConsumedRecord) -> None:
            event_id = record.envelope.id
            if event_id in self.ids and event_id not in seen:
                seen.add(event_id)
                self.report.consumed[record.topic] += 1
                if len(seen) == wanted:
                    stop.set()

        stop = threading.Event()
        consumer = TypedConsumer(
            self.settings, f"bar-demo-{uuid.uuid4().hex[:8]}", topics, catalog=self.catalog
        )
        try:
            consumer.run(handle, stop=stop, idle_timeout_s=15)
        finally:
            consumer.close()
        self.report.check("consumed", len(seen) == wanted, f"{len(seen)}/{wanted} events read back")
        self.done("consume", began, f"{len(seen)} events consumed and decoded")

    def replay_window(self, start_ms: int, end_ms: int) -> list[RawRecord]:
        """Replay the middle phase's window of the results topic from the broker."""
        began = self.step(f"replay {RESULTS} over the workflow phase's time window (broker)")
        replay = BrokerReplay(
            self.settings, RESULTS, Bound("time", time_ms=start_ms), Bound("time", time_ms=end_ms)
        )
        try:
            records = list(replay.records())
        finally:
            replay.close()
        ours = [r for r in records if r.header_dict().get("ce_id") in self.ids]
        exact = len(ours) == len(records) == self.window_results
        self.report.check(
            "replay window",
            exact,
            f"{len(records)} records in the window, {self.window_results} produced in it",
        )
        self._write(records, "replay-window.jsonl")
        self.done("replay", began, f"{len(records)} results replayed, exactly the window")
        return records

    def archive(self, broker_window: list[RawRecord], start_ms: int, end_ms: int) -> None:
        """Wait for the archiver, replay the window from the archive, verify the chains."""
        from buildkit.audit.replay import ArchiveReplay
        from buildkit.audit.verify import verify_archive

        began = self.step(
            "audit archive: every event in Postgres, hash-chained; replay the window from it"
        )
        topics = sorted(self.report.produced)
        wanted = sum(self.report.produced.values())
        deadline = time.monotonic() + 60
        while True:
            archived = self._archived(topics)
            if sum(archived.values()) >= wanted or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        self.report.archived.update(archived)
        self.report.check(
            "archived",
            sum(archived.values()) == wanted,
            f"{sum(archived.values())}/{wanted} archived",
        )
        replay = ArchiveReplay(
            self.settings, RESULTS, Bound("time", time_ms=start_ms), Bound("time", time_ms=end_ms)
        )
        try:
            from_archive = list(replay.records())
        finally:
            replay.close()

        def shape(rows: list[RawRecord]) -> set[tuple[int, int, bytes | None]]:
            return {(r.partition, r.offset, r.value) for r in rows}

        same = shape(from_archive) == shape(broker_window)
        self.report.check(
            "archive replay", same, f"{len(from_archive)} records, identical to the broker's"
        )
        result = verify_archive(self.settings, topics)
        self.report.check("hash chains", result.ok, result.summary())
        self.done("archive", began, result.summary())

    def _archived(self, topics: list[str]) -> Counter[str]:
        """How many of the demo's records (by topic/partition/offset) the archive holds."""
        with db.connect(self.settings) as conn:
            exists = conn.execute("SELECT to_regclass('audit_records')").fetchone()
            if exists is None or exists[0] is None:
                return Counter()
            rows = conn.execute(
                'SELECT topic, partition, "offset" FROM audit_records '
                "WHERE topic = ANY(%s) AND timestamp_ms >= %s",
                (topics, self.started_ms - 60_000),
            ).fetchall()
        return Counter(topic for topic, p, o in set(rows) if (topic, p, o) in self.positions)

    def _write(self, records: list[RawRecord], name: str) -> Path:
        import json

        from buildkit.records import GenericDecoder, record_json
        from buildkit.serde import registry_client

        self.out_dir.mkdir(parents=True, exist_ok=True)
        decoder = GenericDecoder(registry_client(self.settings), self.settings.schema_registry_url)
        path = self.out_dir / name
        with path.open("w", encoding="utf-8") as sink:
            for record in records:
                sink.write(json.dumps(record_json(record, decoder.decode(record.value))) + "\n")
        return path

    def summary(self) -> None:
        """The closing table."""
        table = Table("topic", "produced", "consumed", "archived", title="demo summary")
        for topic in sorted(self.report.produced):
            table.add_row(
                topic,
                str(self.report.produced[topic]),
                str(self.report.consumed[topic]),
                str(self.report.archived[topic]),
            )
        self.console.print(table)
        checks = Table("check", "result", "detail")
        for check in self.report.checks:
            mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
            checks.add_row(check.name, mark, check.detail)
        self.console.print(checks)
        self.console.print(
            f"replayed window written to {self.out_dir / 'replay-window.jsonl'}; "
            "try: buildkit consume bar.gitlab.events --from-beginning --max 3"
        )


def run_demo(
    settings: Settings, console: Console, *, start_stack: bool = True, runs: int = 30
) -> DemoReport:
    """Run every step; the report says whether every check held."""
    demo = Demo(settings, console, runs=runs)
    if start_stack:
        demo.stack_up()
    demo.topics_and_schemas()
    start_ms, end_ms = demo.produce()
    demo.consume()
    window = demo.replay_window(start_ms, end_ms)
    try:
        demo.archive(window, start_ms, end_ms)
    except BuildKitError as exc:
        demo.report.check("audit archive", False, str(exc))
    demo.summary()
    return demo.report
