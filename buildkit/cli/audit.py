"""``buildkit audit archive | verify``: the Postgres audit archive of every catalog topic."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Annotated

import typer
from rich.markup import escape

from buildkit.cli.common import console, handle_errors, load_settings, out
from buildkit.errors import AuditChainBroken

app = typer.Typer(
    help="The audit archive: every catalog topic kept in Postgres, append-only, with a "
    "SHA-256 hash chain per partition.",
    no_args_is_help=True,
)


@app.command()
@handle_errors
def archive(
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after N records.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option("--idle-timeout", min=0, help="Stop when nothing new arrived for S seconds."),
    ] = None,
    group: Annotated[
        str, typer.Option("--group", help="Consumer group (where its offsets are committed).")
    ] = "bar-audit-archiver",
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="Archive this topic instead of the catalog's (repeatable)."),
    ] = None,
) -> None:
    """Archive every catalog topic into Postgres, in the foreground (Ctrl-C stops cleanly).

    Records are kept as raw bytes, appended in one transaction per batch; Kafka
    offsets are committed after it, so nothing is lost and nothing archived twice.
    `buildkit dev up` runs the same archiver in the background.

    Example (catch up, then stop): buildkit audit archive --idle-timeout 5
    """
    from buildkit.audit.archiver import run_archiver
    from buildkit.catalog import Catalog, TopicSpec, default_catalog

    settings = load_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    catalog = default_catalog()
    if topic:
        catalog = Catalog(catalog.find(t) or TopicSpec(t, None) for t in dict.fromkeys(topic))
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        stats = run_archiver(
            settings,
            catalog,
            stop,
            idle_timeout_s=idle_timeout,
            max_records=max_records,
            group=group,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(
        f"archived {stats.archived} record(s) from {len(stats.topics)} topic(s) into "
        f"{escape(settings.display_database_url())} in {stats.elapsed_s:.1f} s "
        f"({stats.duplicates} already archived, {stats.new_generations} new generation(s))"
    )


@app.command()
@handle_errors
def verify(
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Only this topic's chains (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Recompute every hash chain; report the first altered, missing or reordered row of each.

    Exits 0 when every chain verifies, 1 otherwise, naming topic, partition and
    offset of each problem.

    Example: buildkit audit verify --topic bar.tasks.results
    """
    from buildkit.audit.verify import verify_archive

    result = verify_archive(load_settings(), topic)
    if as_json:
        out.print_json(result.model_dump_json())
    for problem in result.problems:
        out.print(escape(problem.describe()))
    if not result.ok:
        raise AuditChainBroken(result.summary())
    console.print(result.summary())
