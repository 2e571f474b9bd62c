"""``buildkit produce``, ``consume`` and ``replay``: events in and out of topics as JSON."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from buildkit.cli.common import console, handle_errors, load_settings
from buildkit.errors import BuildKitError


def register(app: typer.Typer) -> None:
    """Add the top-level data commands to ``app``."""
    app.command("produce")(produce)
    app.command("consume")(consume)
    app.command("replay")(replay)


def _read_input(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except OSError as exc:
        raise BuildKitError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise BuildKitError(f"{path} is not UTF-8 text: {exc}") from exc


@handle_errors
def produce(
    topic: Annotated[str, typer.Argument(help="Catalog topic to produce to.")],
    file: Annotated[
        str, typer.Option("--file", "-f", help="JSON, JSON array or JSON Lines file; - for stdin.")
    ] = "-",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; send nothing.")
    ] = False,
) -> None:
    """Validate records against the topic's contract, then send them all (or none).

    Each item is the event itself, or {"key": ..., "value": {...}, "headers": {...}}
    as `buildkit consume` prints it. If any record is invalid, nothing is sent and
    every problem is listed with its line number and field.

    Example: buildkit produce bar.tasks.results --file results.jsonl
    """
    from buildkit.catalog import default_catalog
    from buildkit.ingest import read_records
    from buildkit.producer import PRODUCER_DEFAULTS, TypedProducer

    settings = load_settings()
    spec = default_catalog().get(topic)
    text, source = _read_input(file)
    conf = settings.kafka_config(**PRODUCER_DEFAULTS)
    records = read_records(
        text, source, spec, max_bytes=int(conf.get("message.max.bytes", 1_000_000))
    )
    if dry_run:
        console.print(f"{len(records)} record(s) valid for {topic}; nothing sent (--dry-run)")
        return
    if not records:
        console.print(f"no records in {source}; nothing sent")
        return
    producer = TypedProducer(settings, source="buildkit-cli")
    producer.check_topics([topic])
    for record in records:
        producer.produce(
            topic,
            record.value,
            record.key,
            traceparent=record.traceparent,
            correlation_id=record.correlation_id,
            headers=record.headers or None,
        )
    stats = producer.flush()
    console.print(
        f"{stats.acked} record(s) acknowledged by {settings.bootstrap_servers} on {topic}"
    )


def _parse_partitions(values: list[int] | None) -> list[int] | None:
    return sorted(set(values)) if values else None


@handle_errors
def consume(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    offset: Annotated[
        str | None,
        typer.Option("--offset", help="Start offset: 42 (every partition) or 0:42,1:17."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Consume in this group and commit what was printed."),
    ] = None,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after N records.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep waiting for new records (Ctrl-C stops).")
    ] = False,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", help="Only this partition (repeatable).")
    ] = None,
) -> None:
    """Print records as JSON Lines: topic, partition, offset, timestamp, key, headers, value.

    Without --from-beginning or --offset it starts at the end (or at the group's
    committed offsets with --group); without --follow it stops at the end of data.

    Example: buildkit consume bar.gitlab.events --from-beginning --max 10
    """
    from buildkit.console_consumer import run_consume

    settings = load_settings()
    printed = run_consume(
        settings,
        topic,
        sys.stdout,
        from_beginning=from_beginning,
        offset=offset,
        group=group,
        max_records=max_records,
        follow=follow,
        partitions=_parse_partitions(partition),
    )
    hint = ""
    if printed == 0 and not (from_beginning or offset or follow):
        hint = " (started at the end: use --from-beginning, --offset or --follow)"
    console.print(f"{printed} record(s) from {topic}{hint}")


@handle_errors
def replay(
    topic: Annotated[str, typer.Argument(help="Topic to replay.")],
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", help="Start: offset (100), per partition (0:10,1:12), time (ISO-8601, -1h)."
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="End (inclusive), same forms as --from.")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="field=value on the event (dotted paths); repeatable."),
    ] = None,
    out_file: Annotated[
        str | None, typer.Option("--out", help="Write JSON Lines here (- for stdout).")
    ] = None,
    to_topic: Annotated[
        str | None,
        typer.Option("--to-topic", help="Copy the records (bytes and headers as they are) here."),
    ] = None,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", help="Only this partition (repeatable).")
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="broker, or archive (the Postgres audit archive).")
    ] = "broker",
    generation: Annotated[
        str | None,
        typer.Option(
            "--generation",
            help="With --source archive: broker generation N, latest, or all "
            "(default: all for time ranges, latest for offset ranges).",
        ),
    ] = None,
) -> None:
    """Replay exactly the records of a range, to a file or to another topic.

    Ranges are exact on any broker, the embedded one included: time bounds are
    checked on every record's own timestamp, never trusted to the broker's
    offsets-for-times; the end of data comes from the fetcher, not the high
    watermark. --source archive reads the Postgres audit archive instead, which
    survives a broker that lost its data.

    Example: buildkit replay bar.tasks.results --from -1h --to now
    --filter status=FAILED --out failed.jsonl
    """
    from buildkit.replay_runner import run_replay

    if (out_file is None) == (to_topic is None):
        raise BuildKitError("give exactly one of --out FILE or --to-topic TOPIC")
    if source not in ("broker", "archive"):
        raise BuildKitError(f'--source must be "broker" or "archive", not "{source}"')
    parsed: list[tuple[str, str]] = []
    for item in filters or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BuildKitError(f'--filter "{item}" is not field=value')
        parsed.append((name.strip(), value))
    settings = load_settings()
    with ExitStack() as stack:
        sink: IO[str] | None = None
        if out_file is not None:
            sink = (
                sys.stdout
                if out_file == "-"
                else stack.enter_context(open(out_file, "w", encoding="utf-8"))
            )
        stats = run_replay(
            settings,
            topic,
            from_,
            to,
            parsed,
            sink=sink,
            to_topic=to_topic,
            partitions=_parse_partitions(partition),
            source=source,
            generation=generation,
        )
    where = out_file if out_file is not None else f"topic {to_topic}"
    console.print(
        f"replayed {stats.kept} record(s) of {topic} to {where} ({stats.read} read in range)"
    )


def dump_json(record: dict[str, Any]) -> str:
    """One JSON Lines row."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
