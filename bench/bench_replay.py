"""(c) Replay throughput of a whole topic, against a raw consume of the same topic.

Every path reads the pre-filled 1-partition topic from its start to its end and
is timed end to end, client set-up included (what a user of
``buildkit replay`` waits for):

* ``replay_records`` — ``BrokerReplay(topic, open, open).records()``: exact end
  detection, ``RawRecord`` per record, no decoding.
* ``replay_to_file`` — ``run_replay`` to a temporary JSON Lines file: decode
  every value by its schema id, write one JSON line per record.
* ``replay_filtered`` — the same with the filter ``agent=test-generator``
  (every record decoded, one in four written).
* ``raw`` — baseline: an assigned ``Consumer`` reading until the record count is
  reached, value bytes untouched (it knows the count; a replay must find the end).

The issue sets no goal for replay: the JSON records the ratios only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.bench_consume import assigned_consumer, raw_handle
from bench.payloads import FILTER
from bench.report import BenchResult, PathResult, Run, run_interleaved
from buildkit.replay import OPEN, BrokerReplay
from buildkit.replay_runner import run_replay
from buildkit.settings import Settings


def run_raw(settings: Settings, topic: str, n: int) -> Run:
    start = time.perf_counter()
    consumer = assigned_consumer(settings, topic)
    try:
        seen = 0
        while seen < n:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            raw_handle(batch)
            seen += len(batch)
    finally:
        consumer.close()
    return Run(time.perf_counter() - start, seen)


def run_records(settings: Settings, topic: str, n: int) -> Run:
    start = time.perf_counter()
    replay = BrokerReplay(settings, topic, OPEN, OPEN, idle_timeout_s=30)
    try:
        seen = sum(1 for _ in replay.records())
    finally:
        replay.close()
    elapsed = time.perf_counter() - start
    if seen != n:
        raise RuntimeError(f"replay of {topic} returned {seen} of {n} records")
    return Run(elapsed, seen)


def run_to_file(
    settings: Settings, topic: str, n: int, out_dir: Path, filters: list[tuple[str, str]]
) -> Run:
    out = out_dir / f"replay-{len(filters)}.jsonl"
    start = time.perf_counter()
    with out.open("w", encoding="utf-8") as sink:
        stats = run_replay(settings, topic, None, None, filters, sink=sink, show_progress=False)
    elapsed = time.perf_counter() - start
    expected = n // 4 if filters else n
    if stats.read != n or stats.kept != expected:
        raise RuntimeError(
            f"replay of {topic}: read {stats.read} of {n}, kept {stats.kept} of {expected}"
        )
    out.unlink()
    return Run(elapsed, stats.read)


def bench_replay(settings: Settings, topic: str, n: int, repeats: int) -> BenchResult:
    """Run the replay paths over the pre-filled ``topic`` of ``n`` records."""
    paths = {
        "replay_records": PathResult(
            "replay_records",
            "BrokerReplay(open, open).records(): plan (watermarks), assigned consume, "
            "exact end by partition EOF, RawRecord per record, no decoding",
        ),
        "replay_to_file": PathResult(
            "replay_to_file",
            "run_replay to a JSON Lines temp file: BrokerReplay + GenericDecoder per value + "
            "json.dumps per record",
        ),
        "replay_filtered": PathResult(
            "replay_filtered",
            f"run_replay with filter {FILTER[0]}={FILTER[1]} to a temp file: every value "
            "decoded, 1 in 4 written",
        ),
        "raw": PathResult(
            "raw",
            "assigned Consumer, consume(1000) batches until the known count; key/value/headers "
            "read, value untouched",
            role="baseline",
        ),
    }
    with tempfile.TemporaryDirectory(prefix="bar-bench-replay-") as tmp:
        out_dir = Path(tmp)
        runners = {
            "replay_records": lambda: run_records(settings, topic, n),
            "replay_to_file": lambda: run_to_file(settings, topic, n, out_dir, []),
            "replay_filtered": lambda: run_to_file(settings, topic, n, out_dir, [FILTER]),
            "raw": lambda: run_raw(settings, topic, n),
        }
        run_interleaved(runners, repeats, paths)
    return BenchResult(
        name="replay",
        title="Replay of a whole topic vs raw consume",
        parameters={
            "records": n,
            "repeats": repeats,
            "event": "AgentTask",
            "partitions": 1,
            "filter": f"{FILTER[0]}={FILTER[1]}",
            "timing": "wall time of the whole call, client set-up included, every path",
        },
        paths=paths,
        goal_text="none set by the issue; ratios against raw consume are reported",
        notes=[
            "replay_* paths count records read (all n); replay_filtered writes n/4.",
        ],
    )
