"""The demo's flow, as ``make demo`` runs it, against this session's services."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from buildkit.audit.archiver import run_archiver
from buildkit.catalog import default_catalog
from buildkit.demo import run_demo
from buildkit.topics import apply_topics


def test_demo_flow_passes_every_check(settings):
    apply_topics(settings, default_catalog())
    stop = threading.Event()
    archiver = threading.Thread(
        target=run_archiver, args=(settings, default_catalog()), kwargs={"stop": stop}, daemon=True
    )
    archiver.start()
    output = io.StringIO()
    try:
        report = run_demo(settings, Console(file=output, width=160), start_stack=False, runs=10)
    finally:
        stop.set()
        archiver.join(30)
    text = output.getvalue()
    assert report.ok, text
    assert [c.name for c in report.checks] == [
        "produced",
        "consumed",
        "replay window",
        "archived",
        "archive replay",
        "hash chains",
    ]
    assert sum(report.produced.values()) == 12 + 10 * 4 + 10 * 8 + 30
    assert report.consumed == report.produced == report.archived
    assert "demo summary" in text
