"""``python -m bench``: run every benchmark against services started for this run.

Starts Tansu, embedded Postgres and the schema registry on free ports (never
the dev stack's), builds the payloads once, runs produce, consume, replay and
archive, writes ``bench/results/<name>.json`` and ``bench/results/summary.md``,
prints the table, and stops the services — also when a benchmark fails.
Exits 1 if a benchmark failed, 0 otherwise (a missed goal is a result, not a
failure: it is in the JSON as ``goal_met: false``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.report import RESULTS_DIR, BenchResult, load_results, print_summary, write_results

BENCHMARKS = ("produce", "consume", "replay", "archive", "roe", "swarm", "webhook", "qits")
# Produce runs are short and the most sensitive to other load on the machine: more of them.
DEFAULT_REPEATS = {
    "produce": 5, "consume": 3, "replay": 3, "archive": 3, "roe": 5, "swarm": 3, "webhook": 3,
    "qits": 2,
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run every benchmark; write bench/results/*.json and summary.md.",
    )
    parser.add_argument("--records", type=int, default=200_000, help="records per run (200000)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per path, the median counts (default: produce 5, the others 3)",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--no-group", action="store_true", help="skip the TypedConsumer.run (group join) info path"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in args.only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported here so that --help answers without loading Kafka clients.
    from bench.bench_archive import bench_archive
    from bench.bench_consume import bench_consume
    from bench.bench_produce import bench_produce, wire_values
    from bench.bench_qits import bench_qits
    from bench.bench_replay import bench_replay
    from bench.bench_roe import bench_roe
    from bench.bench_swarm import bench_swarm
    from bench.bench_webhook import bench_webhook
    from bench.payloads import build_payloads, prefill
    from bench.stack import bench_stack, delete_topics, fresh_topic
    from buildkit.contracts.events import AgentTask

    n = args.records

    def repeats(name: str) -> int:
        return int(args.repeats or DEFAULT_REPEATS[name])

    began = time.monotonic()
    # roe, swarm, webhook and qits build their own events: with only those, skip the 200k
    # payloads.
    payloads = build_payloads(n if set(args.only) - {"roe", "swarm", "webhook", "qits"} else 1)
    print(f"built {len(payloads):,} AgentTask payloads", flush=True)
    results: list[BenchResult] = []
    failed = False
    print("starting Tansu, Postgres and the schema registry on free ports…", flush=True)
    with bench_stack() as settings:
        print(f"  broker {settings.bootstrap_servers}, registry {settings.schema_registry_url}")
        wire = wire_values(settings, payloads)
        read_topic: str | None = None

        def topic_to_read() -> str:
            nonlocal read_topic
            if read_topic is None:
                read_topic = fresh_topic(settings, "read", AgentTask)
                print(f"pre-filling {read_topic} with {n:,} records…", flush=True)
                prefill(settings, read_topic, payloads)
            return read_topic

        steps: dict[str, Callable[[], BenchResult]] = {
            "produce": lambda: bench_produce(settings, payloads, wire, repeats("produce")),
            "consume": lambda: bench_consume(
                settings, topic_to_read(), n, repeats("consume"), with_group=not args.no_group
            ),
            "replay": lambda: bench_replay(settings, topic_to_read(), n, repeats("replay")),
            "archive": lambda: bench_archive(settings, payloads, wire, repeats("archive")),
            "roe": lambda: bench_roe(settings, repeats("roe")),
            "swarm": lambda: bench_swarm(settings, repeats("swarm")),
            "webhook": lambda: bench_webhook(settings, repeats("webhook")),
            "qits": lambda: bench_qits(settings, repeats("qits")),
        }
        for name in args.only:
            print(f"\n[{name}]", flush=True)
            started = time.monotonic()
            load = os.getloadavg()
            try:
                result = steps[name]()
            except Exception as exc:
                failed = True
                # The frames, and the message cut short: some quote whole batches.
                message = f"{type(exc).__name__}: {str(exc)[:500]}"
                print("".join(traceback.format_tb(exc.__traceback__, limit=-6)) + message)
                result = BenchResult(name, name, {"records": n}, {}, status="failed")
                result.notes.append(message)
            result.duration_s = time.monotonic() - started
            # Other work on the machine moves absolute numbers; ratios are what to compare.
            result.parameters["load_average_before"] = [round(x, 2) for x in load]
            results.append(result)
        if read_topic is not None:
            delete_topics(settings, [read_topic])
    written = write_results(results, args.out)
    print()
    print_summary(load_results(args.out))
    print(f"\nwrote {', '.join(str(p) for p in written)} in {time.monotonic() - began:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
