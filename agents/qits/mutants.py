"""Mutation testing of a built API with its HTTP tests, on a capped sample of mutants.

A thin adapter over :func:`qits.mutation.run_mutation_test`, which does the planning,
the deterministic sampling (``max_mutants``), the file selection (``files``), the
runs and the score. What the generated tests add: they are HTTP calls, so each
mutant needs a server running the *mutated* copy. Each working copy therefore gets
a small pytest plugin (:data:`PLUGIN`, written there by ``prepare_copy`` and loaded
with ``-p``) that imports ``app`` from the copied sources (on ``PYTHONPATH``), serves
it with uvicorn in a thread on a free port and points ``BAR_QITS_BASE_URL`` at it; a
mutant that breaks the import ends the run with exit code 1, i.e. it is killed. The
tests get :data:`~agents.qits.serving.BUILT_API_CREDENTIALS` (values already in the
environment win) and never an inherited ``BAR_QITS_BASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agents.qits.serving import BUILT_API_CREDENTIALS
from qits.mutation import ALL_GROUPS, MutationReport, OperatorGroup, WorkingCopy, run_mutation_test

__all__ = ["PLUGIN", "PLUGIN_MODULE", "run_http_mutation"]

#: Module name of :data:`PLUGIN` in each working copy.
PLUGIN_MODULE = "qits_serve_app"

#: The pytest plugin serving the working copy's app for the tests.
PLUGIN = '''"""Serve app:app from the copied sources (on PYTHONPATH) for the generated tests."""
import os
import socket
import threading
import time

import pytest

_server = None
_thread = None


def pytest_configure(config):
    global _server, _thread
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


def _write_plugin(copy: WorkingCopy) -> None:
    (copy.root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN, encoding="utf-8")


def run_http_mutation(
    src: Path,
    tests: Path,
    *,
    files: Sequence[str] = ("app.py",),
    max_mutants: int = 30,
    operators: Sequence[OperatorGroup] = ALL_GROUPS,
    workers: int = 2,
) -> MutationReport:
    """Mutate ``files`` (globs relative to ``src``) of the built API in ``src`` and run the
    HTTP ``tests`` against at most ``max_mutants`` of them (see the module docstring);
    the report's ``planned`` and ``sampled`` say how many were planned and tried."""
    credentials = {
        name: os.environ.get(name, value) for name, value in BUILT_API_CREDENTIALS.items()
    }
    return run_mutation_test(
        src,
        tests,
        operators=operators,
        files=list(files),
        max_mutants=max_mutants,
        workers=workers,
        pytest_args=["-p", PLUGIN_MODULE],
        extra_env={**credentials, "BAR_QITS_BASE_URL": None},
        prepare_copy=_write_plugin,
        baseline_timeout_s=300,
    )
