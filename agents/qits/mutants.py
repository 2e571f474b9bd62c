"""Mutation testing of a built API with its HTTP tests, on a capped sample of mutants.

:func:`qits.mutation.run_mutation_test` runs the tests against each mutated copy of
the sources, which works for tests that import the code. The generated tests are
HTTP calls instead: each mutant needs a server running the *mutated* copy. So each
pytest run here loads a small plugin (:data:`PLUGIN`, written into the working
copy and loaded with ``-p``) that imports ``app`` from the copy, serves it with
uvicorn in a thread on a free port and points ``BAR_QITS_BASE_URL`` at it; a mutant
that breaks the import ends the run with exit code 1, i.e. it is killed.

The mutants are planned with :func:`qits.mutation.plan_mutants` (same operators,
same outcome rules and score as there) over the chosen files only (``app.py`` by
default: the models and the copied runtime are generic), then at most
``max_mutants`` are tried, spread evenly over the plan so the sample is the same
on every run and covers the whole file. The report says how many were planned and
how many sampled.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

from agents.qits.serving import BUILT_API_CREDENTIALS
from qits.mutation import ALL_GROUPS, Mutant, MutationReport, OperatorGroup, plan_mutants

__all__ = ["PLUGIN", "SampledMutation", "run_http_mutation", "sample"]

#: The pytest plugin serving the working copy's app for the tests (module ``qits_serve_app``).
PLUGIN = '''"""Serve app:app from $QITS_APP_DIR for the generated HTTP tests (agents.qits)."""
import os
import socket
import sys
import threading
import time

import pytest

_server = None
_thread = None


def pytest_configure(config):
    global _server, _thread
    sys.path.insert(0, os.environ["QITS_APP_DIR"])
    try:
        import uvicorn
        from app import app
    except BaseException as exc:  # the mutant broke the app: that counts as detected
        pytest.exit(f"app did not import: {exc!r}", returncode=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    _thread = threading.Thread(target=_server.run, daemon=True)
    _thread.start()
    deadline = time.monotonic() + 20
    while not _server.started:
        if not _thread.is_alive() or time.monotonic() > deadline:
            pytest.exit("app did not start", returncode=1)
        time.sleep(0.02)
    os.environ["BAR_QITS_BASE_URL"] = f"http://127.0.0.1:{port}"


def pytest_unconfigure(config):
    if _server is not None:
        _server.should_exit = True
        _thread.join(timeout=5)
'''


@dataclass(frozen=True)
class SampledMutation:
    """A mutation report and how many mutants the plan had before sampling."""

    report: MutationReport
    planned: int

    @property
    def sampled(self) -> int:
        """Mutants actually tried."""
        return self.report.total


@dataclass(frozen=True)
class _Copy:
    root: Path
    src: Path
    tests: Path


def sample(items: Sequence[Any], limit: int) -> list[Any]:
    """At most ``limit`` of ``items``, evenly spread, always the same ones."""
    if limit <= 0:
        return []
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def _copy(src: Path, tests: Path, root: Path) -> _Copy:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(src, root / "src", ignore=ignore)
    shutil.copytree(tests, root / "tests", ignore=ignore)
    (root / "qits_serve_app.py").write_text(PLUGIN, encoding="utf-8")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return _Copy(root, root / "src", root / "tests")


def _pytest(copy: _Copy, timeout_s: float | None) -> int | None:
    """pytest's exit code on the copy, None on a timeout."""
    env = {
        **BUILT_API_CREDENTIALS,
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",  # a mutant written within the same second recompiles
        "QITS_APP_DIR": str(copy.src),
        "PYTHONPATH": os.pathsep.join([str(copy.root), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("BAR_QITS_BASE_URL", None)
    env.pop("COVERAGE_PROCESS_START", None)
    cmd = [
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
        "-p", "qits_serve_app", "-c", str(copy.root / "pytest.ini"),
        "--rootdir", str(copy.root), str(copy.tests),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=copy.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            proc.kill()
        proc.wait()
        return None


def run_http_mutation(
    src: Path,
    tests: Path,
    *,
    files: Sequence[str] = ("app.py",),
    max_mutants: int = 30,
    operators: Sequence[OperatorGroup] = ALL_GROUPS,
    workers: int = 2,
) -> SampledMutation:
    """Mutate ``files`` of the built API in ``src`` and run the HTTP ``tests`` against each
    (see the module docstring)."""
    started = time.monotonic()
    groups = list(dict.fromkeys(operators))

    def report(planned: int, **fields: Any) -> SampledMutation:
        fields.setdefault("duration_s", round(time.monotonic() - started, 2))
        return SampledMutation(
            MutationReport.model_validate(
                {"operators": groups, "src": str(src), "tests": str(tests), **fields}
            ),
            planned,
        )

    with tempfile.TemporaryDirectory(prefix="qits-http-mutation-") as tmp:
        copies = [_copy(src, tests, Path(tmp) / f"w{i}") for i in range(max(1, workers))]
        t0 = time.monotonic()
        if _pytest(copies[0], 300) != 0:
            return report(0, status="baseline_failed", score=None,
                          baseline_output="the tests fail against the unmutated app")  # fmt: skip
        baseline_s = time.monotonic() - t0
        plan = [
            m for name in files if (src / name).exists() for m in plan_mutants(src / name, groups)
        ]
        if not plan:
            return report(0, status="no_mutants", score=None)
        chosen = sample(plan, max_mutants)
        free: Queue[_Copy] = Queue()
        for copy in copies:
            free.put(copy)

        def one(planned: Any) -> Mutant:
            copy = free.get()
            try:
                return _run_one(planned, copy, baseline_s * 4 + 10)
            finally:
                free.put(copy)

        with ThreadPoolExecutor(max_workers=len(copies)) as pool:
            results = list(pool.map(one, chosen))
    counts = {
        o: sum(m.outcome == o for m in results) for o in ("killed", "survived", "timeout", "error")
    }
    scored = counts["killed"] + counts["timeout"] + counts["survived"]
    score = round((counts["killed"] + counts["timeout"]) * 100 / scored, 2) if scored else None
    return report(
        len(plan),
        status="completed",
        score=score,
        killed=counts["killed"],
        survived=counts["survived"],
        timeout=counts["timeout"],
        errors=counts["error"],
        total=len(results),
        survivors=[m for m in results if m.outcome == "survived"],
        errored=[m for m in results if m.outcome == "error"],
    )


def _run_one(planned: Any, copy: _Copy, timeout_s: float) -> Mutant:
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    target = copy.src / planned.rel_path
    original = target.read_text(encoding="utf-8")
    rel = planned.rel_path.as_posix()

    def mutant(outcome: Any, change: str, diff: str = "") -> Mutant:
        return Mutant(
            file=rel, line=planned.line, operator=planned.operator, group=planned.group,
            change=change, diff=diff, outcome=outcome,
        )  # fmt: skip

    try:
        mutated = mutate_code(original, get_operator(planned.operator)(), planned.occurrence)
    except Exception as exc:  # cosmic-ray may fail on exotic syntax; count, don't crash
        return mutant("error", f"mutation failed: {exc}")
    if mutated is None:
        return mutant("error", "operator did not apply")
    before, after = original.splitlines(), mutated.splitlines()
    line = planned.line
    change = (
        f"{before[line - 1].strip()} → {after[line - 1].strip()}"
        if 0 < line <= min(len(before), len(after))
        else "(see diff)"
    )
    diff = "\n".join(difflib.unified_diff(before, after, f"a/{rel}", f"b/{rel}", lineterm=""))
    try:
        target.write_text(mutated, encoding="utf-8")
        code = _pytest(copy, timeout_s)
    finally:
        target.write_text(original, encoding="utf-8")
    if code is None:
        return mutant("timeout", change, diff)
    if code == 0:
        return mutant("survived", change, diff)
    if code in (1, 2):  # a test failed, or the mutant broke collection/import
        return mutant("killed", change, diff)
    return mutant("error", f"{change} (pytest exit code {code})", diff)
