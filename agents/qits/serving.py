"""Running a built API and the generated HTTP tests against it.

The generated tests (:mod:`qits.testgen`) are HTTP calls to a live server at
``BAR_QITS_BASE_URL``; the built API (:mod:`qits.apibuild`) is a directory with
``app.py`` served by uvicorn. :func:`serve_app` starts that server in a subprocess
on a free port and stops it after the block; :func:`run_http_tests` runs pytest on
the tests against a base URL and reads the outcome from pytest's JUnit XML (counts
and failing test names, not the console text).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BUILT_API_CREDENTIALS", "TestRun", "free_port", "run_http_tests", "serve_app"]

#: Credentials for the generated tests when they run against an API built by
#: :mod:`qits.apibuild`, which accepts any non-empty credential: without them every
#: test of a secured operation would be skipped. Values already in the environment win.
BUILT_API_CREDENTIALS = {
    "BAR_QITS_TOKEN": "qits-test-token",
    "BAR_QITS_API_KEY": "qits-test-key",
    "BAR_QITS_USERNAME": "qits",
    "BAR_QITS_PASSWORD": "qits",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TestRun:
    """What one pytest run of the generated tests found."""

    __test__ = False  # not a pytest test class

    exit_code: int
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    #: ``test_x.py::test_name: first line of the failure``, per failing test.
    failures: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        """All collected tests passed (or were skipped)."""
        return self.exit_code == 0


@contextmanager
def serve_app(src: Path, *, startup_timeout_s: float = 30) -> Iterator[str]:
    """Serve ``src/app.py`` (``app:app``) with uvicorn on a free port; yields the base URL."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(src),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=src, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the built API in {src} did not start:\n{tail}")
                try:
                    httpx.get(base_url + "/", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_http_tests(
    tests: Path,
    base_url: str | None,
    *,
    timeout_s: float = 300,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> TestRun:
    """Run pytest on ``tests`` with ``BAR_QITS_BASE_URL=base_url`` (when given); ``env``
    adds variables the process environment does not set."""
    with tempfile.TemporaryDirectory(prefix="qits-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        # An ini of our own: the tests must not pick up a project config above them.
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        run_env = {**(env or {}), **os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        if base_url is not None:
            run_env["BAR_QITS_BASE_URL"] = base_url
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-c", str(ini), "--rootdir", str(tests), f"--junitxml={junit}",
            *extra_args, str(tests),
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, cwd=tests, env=run_env, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return TestRun(exit_code=-1, output=f"pytest ran longer than {timeout_s:g}s")
        run = TestRun(exit_code=proc.returncode, output=(proc.stdout + proc.stderr)[-4000:])
        if junit.exists():
            _read_junit(junit, run)
        return run


def _read_junit(path: Path, run: TestRun) -> None:
    # The file is pytest's own JUnit XML, written by our subprocess into our temp dir.
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            run.failed += 1
            name = f"{case.get('classname', '').rpartition('.')[2]}.py::{case.get('name')}"
            first = (problem.get("message") or "").strip().splitlines()
            run.failures.append(f"{name}: {first[0][:200] if first else 'failed'}")
        elif case.find("skipped") is not None:
            run.skipped += 1
        else:
            run.passed += 1
