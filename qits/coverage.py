"""Line coverage with coverage.py: of a test run, and of an API server driven over HTTP.

``run_coverage(tests, source)`` runs pytest in a subprocess under
``coverage run --source=SOURCE`` and returns the percent covered and, per file,
the lines never run (from coverage's JSON report).

``serve_under_coverage(app_dir, "main:app")`` is for the quality gate, whose
generated tests are HTTP calls against a running API: what must be measured is
the *server* process, not the test process. It starts uvicorn under
``coverage run`` (one process, no ``--reload``/workers, so no subprocess
measurement is needed), yields the base URL, and on exit stops the server with
SIGINT — uvicorn's graceful shutdown — so coverage's exit hook writes the data
(``sigterm = true`` in the generated rc file covers a SIGTERM fallback). The
data file it leaves can be combined with a unit-test run's by
:func:`coverage_report`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from buildkit.dev.procs import free_port
from qits.errors import PathNotFound, QualityToolError, ServerDidNotStart


class FileCoverage(BaseModel):
    """Coverage of one source file."""

    file: str = Field(description="path relative to the source directory")
    percent: float
    statements: int
    covered: int
    missing_lines: list[int]


class CoverageReport(BaseModel):
    """Total line coverage of ``source`` and the lines each file never ran."""

    source: str
    percent: float
    statements: int
    covered: int
    files: list[FileCoverage]
    tests_exit_code: int | None = Field(
        default=None, description="pytest's exit code when the report comes from run_coverage"
    )
    data_file: str | None = None

    @property
    def tests_passed(self) -> bool:
        """True unless the measured pytest run failed."""
        return self.tests_exit_code in (None, 0)


def _rc_file(directory: Path, source: Path) -> Path:
    rc = directory / "coveragerc"
    rc.write_text(f"[run]\nsource =\n    {source}\nsigterm = true\n", encoding="utf-8")
    return rc


def import_root(source: Path) -> Path:
    """The directory to put on ``sys.path`` so the code under ``source`` imports.

    A package (``__init__.py`` present) is imported by name, from its parent; a
    plain folder of modules is itself the import root.
    """
    if source.is_file():
        return source.parent
    return source.parent if (source / "__init__.py").exists() else source


def coverage_report(data_files: Sequence[Path | str], source: Path | str) -> CoverageReport:
    """Combine coverage data files (of any processes) into one report restricted to ``source``."""
    import coverage

    source = Path(source).resolve()
    existing = [str(Path(f)) for f in data_files if Path(f).exists()]
    if not existing:
        raise QualityToolError(
            f"no coverage data among {[str(f) for f in data_files]} — did the measured process "
            "exit cleanly?"
        )
    with tempfile.TemporaryDirectory(prefix="qits-cov-") as tmp:
        cov = coverage.Coverage(
            data_file=str(Path(tmp) / ".coverage"), config_file=False, source=[str(source)]
        )
        cov.combine(existing, keep=True)
        out = Path(tmp) / "coverage.json"
        try:
            cov.json_report(outfile=str(out))
        except coverage.exceptions.NoDataError as exc:
            raise QualityToolError(f"no code under {source} was measured: {exc}") from exc
        data = json.loads(out.read_text(encoding="utf-8"))
    files = []
    for name, info in sorted(data["files"].items()):
        path = Path(name) if Path(name).is_absolute() else Path.cwd() / name
        try:
            rel = path.resolve().relative_to(source).as_posix()
        except ValueError:
            rel = name
        summary = info["summary"]
        files.append(
            FileCoverage(
                file=rel,
                percent=round(summary["percent_covered"], 2),
                statements=summary["num_statements"],
                covered=summary["covered_lines"],
                missing_lines=info["missing_lines"],
            )
        )
    totals = data["totals"]
    return CoverageReport(
        source=str(source),
        percent=round(totals["percent_covered"], 2),
        statements=totals["num_statements"],
        covered=totals["covered_lines"],
        files=files,
    )


def run_coverage(
    tests: Path | str,
    source: Path | str,
    *,
    python: str | None = None,
    pytest_args: Sequence[str] = (),
    data_file: Path | str | None = None,
    load_plugins: bool = True,
    timeout_s: float = 600,
) -> CoverageReport:
    """Run pytest on ``tests`` under coverage, measuring the code under ``source``.

    The import root of ``source`` (see :func:`import_root`) is put on
    ``PYTHONPATH``. Failing tests do not raise: the report carries pytest's exit
    code. ``data_file`` keeps the raw data for combining; by default it is
    discarded. ``load_plugins=False`` sets ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
    """
    tests, source = Path(tests).resolve(), Path(source).resolve()
    if not tests.exists():
        raise PathNotFound("tests path", tests)
    if not source.exists():
        raise PathNotFound("source directory", source)
    with tempfile.TemporaryDirectory(prefix="qits-cov-") as tmp:
        data = Path(data_file).resolve() if data_file else Path(tmp) / ".coverage"
        env = dict(os.environ)
        if not load_plugins:
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(import_root(source)), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        cmd = [
            python or sys.executable,
            "-m",
            "coverage",
            "run",
            f"--rcfile={_rc_file(Path(tmp), source)}",
            f"--data-file={data}",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *pytest_args,
            str(tests),
        ]
        proc = subprocess.run(
            cmd,
            cwd=tests if tests.is_dir() else tests.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode not in (0, 1):
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise QualityToolError(f"pytest on {tests} exited {proc.returncode}:\n{tail}")
        report = coverage_report([data], source)
    return report.model_copy(
        update={"tests_exit_code": proc.returncode, "data_file": str(data) if data_file else None}
    )


class CoverageServer:
    """A running API server under coverage: ``base_url`` inside the block, ``report`` after it."""

    def __init__(self, base_url: str, data_file: Path) -> None:
        self.base_url = base_url
        self.data_file = data_file
        self.report: CoverageReport | None = None


@contextmanager
def serve_under_coverage(
    app_dir: Path | str,
    module: str,
    port: int | None = None,
    *,
    data_file: Path | str | None = None,
    python: str | None = None,
    startup_timeout_s: float = 30,
    shutdown_timeout_s: float = 15,
) -> Iterator[CoverageServer]:
    """Serve the ASGI app ``module`` ("main" or "main:app") from ``app_dir`` under coverage.

    Yields a :class:`CoverageServer`; after the block the server has been
    stopped with SIGINT and ``server.report`` holds the coverage of ``app_dir``.
    ``data_file`` keeps the raw data (to combine with other runs); ``port``
    defaults to a free one.
    """
    app_dir = Path(app_dir).resolve()
    if not app_dir.is_dir():
        raise PathNotFound("app directory", app_dir)
    target = module if ":" in module else f"{module}:app"
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="qits-serve-") as tmp:
        data = Path(data_file).resolve() if data_file else Path(tmp) / ".coverage"
        log = Path(tmp) / "server.log"
        cmd = [
            python or sys.executable,
            "-m",
            "coverage",
            "run",
            f"--rcfile={_rc_file(Path(tmp), app_dir)}",
            f"--data-file={data}",
            "-m",
            "uvicorn",
            target,
            "--app-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=app_dir, stdout=out, stderr=subprocess.STDOUT)
        server = CoverageServer(base_url, data)
        try:
            _wait_until_up(proc, base_url, startup_timeout_s, log)
            yield server
        finally:
            _stop(proc, shutdown_timeout_s)
        server.report = coverage_report([data], app_dir)
        server.report.data_file = str(data) if data_file else None


def _wait_until_up(
    proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log: Path
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            httpx.get(base_url + "/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServerDidNotStart(
        f"the server under coverage did not answer on {base_url} within {timeout_s:.0f}s "
        f"(exit code {proc.poll()}):\n{tail}"
    )


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGINT first (graceful: coverage saves at exit), SIGTERM next, SIGKILL last."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait()
