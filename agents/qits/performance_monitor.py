"""performance-monitor: load the built API, check its thresholds, catch regressions.

The ``src/`` artifact is served by uvicorn (one process, one worker, as
:func:`agents.qits.serving.serve_app` starts it) and driven with httpx: after a
short warm-up, ``requests`` GETs from ``concurrency`` concurrent clients,
round-robin over the API's GET operations without path parameters (read from the
build's ``build-report.json``; FastAPI's ``/openapi.json`` when there are none).

* ``p99_ms``: 99th percentile latency (nearest rank); ``throughput_rps``: requests
  over the wall time of the load; ``errors``: transport errors and 5xx answers.
* Thresholds: the manifest's ``thresholds`` (``p99: 1000ms``, ``throughput: 1000
  req/s``), overridable by policy ``p99_ms`` / ``throughput_rps``. One uvicorn
  worker on a small machine may well not reach 1000 req/s: then the task fails with
  ``qits.performance_threshold`` and says so, rather than pretending.
* Baseline: the last passing measurement per project (or per ``baseline`` name) in
  ``<data_dir>/perf-baselines/<key>.json``. p99 more than ``regression_pct`` percent
  above it, or throughput that much below, is ``qits.performance_regression``. A
  passing run replaces the baseline (policy ``update_baseline``); a failing one
  never does, so a regression cannot become the new normal.

Metrics (on success): ``p99_ms``, ``p50_ms``, ``throughput_rps``, ``requests``,
``errors``; the ``performance-report.json`` artifact has them with the thresholds
and the baseline compared with.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from agents.qits.api_builder import SRC_ARTIFACT
from agents.qits.base import QitsAgent, QitsPolicy
from agents.qits.inputs import QitsInput
from agents.qits.serving import serve_app
from agents.runtime.agent import AgentFault, TaskOutcome

__all__ = [
    "PERFORMANCE_REGRESSION",
    "PERFORMANCE_THRESHOLD",
    "LoadResult",
    "PerformanceMonitorAgent",
    "PerformancePolicy",
    "drive_load",
]

PERFORMANCE_THRESHOLD = "qits.performance_threshold"
PERFORMANCE_REGRESSION = "qits.performance_regression"
REPORT_ARTIFACT = "performance-report.json"
_KEY = re.compile(r"[^A-Za-z0-9._-]+")


class PerformancePolicy(QitsPolicy):
    """Load shape, thresholds and regression tolerance of the performance-monitor."""

    requests: int = Field(default=2000, ge=10)
    concurrency: int = Field(default=16, ge=1)
    warmup_requests: int = Field(default=50, ge=0)
    #: Overrides the manifest's ``p99`` threshold (milliseconds).
    p99_ms: float | None = Field(default=None, gt=0)
    #: Overrides the manifest's ``throughput`` threshold (requests per second).
    throughput_rps: float | None = Field(default=None, gt=0)
    #: How much worse than the baseline (percent) counts as a regression.
    regression_pct: float = Field(default=20, ge=0)
    update_baseline: bool = True


class LoadResult(dict[str, float]):
    """``p50_ms``, ``p99_ms``, ``throughput_rps``, ``requests``, ``errors``."""


def _percentile(sorted_ms: list[float], pct: float) -> float:
    rank = max(1, math.ceil(pct / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def drive_load(
    base_url: str, paths: list[str], requests: int, concurrency: int, warmup: int = 0
) -> LoadResult:
    """Send ``requests`` GETs over ``paths`` from ``concurrency`` clients; the numbers."""
    import httpx

    async def main() -> LoadResult:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
            for n in range(warmup):
                await client.get(paths[n % len(paths)])
            latencies: list[float] = []
            errors = 0
            counter = iter(range(requests))

            async def worker() -> None:
                nonlocal errors
                for n in counter:
                    t0 = time.perf_counter()
                    try:
                        answer = await client.get(paths[n % len(paths)])
                        if answer.status_code >= 500:
                            errors += 1
                    except httpx.TransportError:
                        errors += 1
                    latencies.append((time.perf_counter() - t0) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - started
        latencies.sort()
        return LoadResult(
            p50_ms=round(_percentile(latencies, 50), 2),
            p99_ms=round(_percentile(latencies, 99), 2),
            throughput_rps=round(requests / wall, 1),
            requests=float(requests),
            errors=float(errors),
        )

    return asyncio.run(main())


def get_paths(src: Path) -> list[str]:
    """GET paths without path parameters, from the build report; ``/openapi.json`` if none."""
    try:
        report = json.loads((src / "build-report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    paths = sorted(
        {
            op["path"]
            for op in report.get("operations", [])
            if op.get("method", "").lower() == "get"
            and "{" not in op.get("path", "")
            and op.get("kind") != "unsupported"
        }
    )
    return paths or ["/openapi.json"]


class PerformanceMonitorAgent(QitsAgent[PerformancePolicy]):
    """Measures p99 latency and throughput of the built API against thresholds and a
    stored baseline."""

    manifest_file: ClassVar[str] = "performance-monitor"
    policy_model = PerformancePolicy

    def run(self, inp: QitsInput, policy: PerformancePolicy) -> TaskOutcome:
        """See the module docstring."""
        src = inp.artifact(SRC_ARTIFACT, self.store, inp.src)
        paths = get_paths(src)
        with serve_app(src) as base_url:
            load = drive_load(
                base_url, paths, policy.requests, policy.concurrency, policy.warmup_requests
            )
        thresholds = self.thresholds(policy)
        problems: list[str] = []
        if "p99_ms" in thresholds and load["p99_ms"] > thresholds["p99_ms"]:
            problems.append(f"p99 {load['p99_ms']:g} ms > {thresholds['p99_ms']:g} ms")
        if "throughput_rps" in thresholds and load["throughput_rps"] < thresholds["throughput_rps"]:
            problems.append(
                f"throughput {load['throughput_rps']:g} req/s < "
                f"{thresholds['throughput_rps']:g} req/s (one uvicorn worker)"
            )
        if load["errors"]:
            problems.append(f"{load['errors']:g} of {load['requests']:g} requests failed")
        baseline_file = self.baseline_file(inp, src)
        baseline = _read(baseline_file)
        regressions = _regressions(load, baseline, policy.regression_pct) if baseline else []
        out = self.output(inp, REPORT_ARTIFACT)
        out.write_text(
            json.dumps(
                {
                    "measured": load,
                    "paths": paths,
                    "thresholds": thresholds,
                    "baseline": baseline,
                    "baseline_file": str(baseline_file),
                    "problems": problems,
                    "regressions": regressions,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        measured = (
            f"p99 {load['p99_ms']:g} ms, p50 {load['p50_ms']:g} ms, "
            f"{load['throughput_rps']:g} req/s over {load['requests']:g} GETs on {', '.join(paths)}"
        )
        if problems or regressions:
            code = PERFORMANCE_THRESHOLD if problems else PERFORMANCE_REGRESSION
            body = "### :x: Performance\n\n" + "\n".join(
                f"- {p}" for p in [*problems, *regressions]
            )
            actions = inp.note(body + f"\n\nMeasured: {measured}.\n") if policy.notes else []
            raise AgentFault(
                code, f"{'; '.join([*problems, *regressions])} — measured {measured}",
                actions=actions,
            )  # fmt: skip
        if policy.update_baseline:
            baseline_file.parent.mkdir(parents=True, exist_ok=True)
            baseline_file.write_text(json.dumps(load, indent=2), encoding="utf-8")
        return TaskOutcome(metrics=dict(load), outputs={REPORT_ARTIFACT: self.store.reference(out)})

    def thresholds(self, policy: PerformancePolicy) -> dict[str, float]:
        """``p99_ms`` and ``throughput_rps`` limits: the policy's, else the manifest's."""
        found: dict[str, float] = {}
        parsed = self.manifest.parsed_thresholds
        if "p99" in parsed:
            value, unit = parsed["p99"]
            found["p99_ms"] = value * 1000 if unit == "s" else value
        if "throughput" in parsed:
            found["throughput_rps"] = parsed["throughput"].value
        if policy.p99_ms is not None:
            found["p99_ms"] = policy.p99_ms
        if policy.throughput_rps is not None:
            found["throughput_rps"] = policy.throughput_rps
        return found

    def baseline_file(self, inp: QitsInput, src: Path) -> Path:
        """``<data_dir>/perf-baselines/<key>.json``: key is the ``baseline`` parameter, else
        ``project-<id>``, else the API's title."""
        key = inp.baseline
        if not key and inp.project_id is not None:
            key = f"project-{inp.project_id}"
        if not key:
            try:
                key = json.loads((src / "build-report.json").read_text("utf-8"))["title"]
            except (OSError, ValueError, KeyError):
                key = "default"
        return self.data_dir / "perf-baselines" / f"{_KEY.sub('_', str(key)).strip('_')}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _regressions(load: LoadResult, baseline: dict[str, Any], pct: float) -> list[str]:
    found = []
    base_p99 = baseline.get("p99_ms")
    if isinstance(base_p99, int | float) and load["p99_ms"] > base_p99 * (1 + pct / 100):
        found.append(
            f"regression: p99 {load['p99_ms']:g} ms is more than {pct:g}% above the baseline "
            f"{base_p99:g} ms"
        )
    base_rps = baseline.get("throughput_rps")
    if isinstance(base_rps, int | float) and load["throughput_rps"] < base_rps * (1 - pct / 100):
        found.append(
            f"regression: throughput {load['throughput_rps']:g} req/s is more than {pct:g}% "
            f"below the baseline {base_rps:g} req/s"
        )
    return found
