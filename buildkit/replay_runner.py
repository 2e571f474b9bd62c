"""Run a replay: from the broker or the audit archive, filtered, to a file or a topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Literal, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from buildkit.errors import BuildKitError
from buildkit.records import GenericDecoder, RawRecord, matches, record_json
from buildkit.replay import BrokerReplay, ProgressHook, ReplayStats, parse_bound
from buildkit.serde import registry_client
from buildkit.settings import Settings


class ReplaySource(Protocol):
    """Where replayed records come from: the broker or the audit archive."""

    stats: ReplayStats

    def records(self, progress: ProgressHook | None = None) -> Iterator[RawRecord]: ...

    def close(self) -> None: ...


def open_source(
    settings: Settings,
    topic: str,
    start: str | None,
    end: str | None,
    partitions: list[int] | None,
    source: str,
    generation: str | None = None,
) -> ReplaySource:
    """The replay source named by ``--source`` (``generation``: archive only)."""
    lower, upper = parse_bound(start), parse_bound(end)
    if source == "archive":
        from buildkit.audit.replay import ArchiveReplay

        return ArchiveReplay(
            settings, topic, lower, upper, partitions=partitions, generation=_generation(generation)
        )
    if generation is not None:
        raise BuildKitError("--generation applies to --source archive only")
    return BrokerReplay(settings, topic, lower, upper, partitions=partitions)


def _generation(text: str | None) -> int | Literal["latest", "all"] | None:
    if text is None or text in ("latest", "all"):
        return text  # type: ignore[return-value]
    if text.isdigit():
        return int(text)
    raise BuildKitError(f'--generation must be a number, "latest" or "all", not "{text}"')


def run_replay(
    settings: Settings,
    topic: str,
    start: str | None,
    end: str | None,
    filters: list[tuple[str, str]],
    *,
    sink: IO[str] | None = None,
    to_topic: str | None = None,
    partitions: list[int] | None = None,
    source: str = "broker",
    generation: str | None = None,
    show_progress: bool = True,
) -> ReplayStats:
    """Replay ``topic`` between ``start`` and ``end``; return what was read and kept."""
    from buildkit.producer import TypedProducer

    replay = open_source(settings, topic, start, end, partitions, source, generation)
    decoder = GenericDecoder(registry_client(settings), settings.schema_registry_url)
    producer = None
    if to_topic is not None:
        producer = TypedProducer(settings, source="buildkit-replay")
        producer.check_topics([to_topic])
    kept = 0
    progress = Progress(
        TextColumn(f"replay {topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not show_progress,
    )
    try:
        with progress:
            task = progress.add_task("replay", total=replay.stats.estimated_total or None)

            def advance(step: int, total: int) -> None:
                done = progress.tasks[0].completed + step
                progress.update(task, advance=step, total=max(total, int(done)))

            for record in replay.records(advance if show_progress else None):
                value = (
                    decoder.decode_or_raw(record.value) if (filters or sink is not None) else None
                )
                if filters and not matches(value, filters):
                    continue
                kept += 1
                if sink is not None:
                    sink.write(json.dumps(record_json(record, value), ensure_ascii=False) + "\n")
                if producer is not None and to_topic is not None:
                    headers = [
                        *record.headers,
                        (
                            "bar_replayed_from",
                            f"{record.topic}/{record.partition}/{record.offset}".encode(),
                        ),
                    ]
                    producer.produce_raw(to_topic, record.value, record.key, headers)  # type: ignore[arg-type]
        if producer is not None:
            producer.flush()
        if sink is not None:
            sink.flush()
    except BuildKitError:
        raise
    finally:
        replay.close()
    replay.stats.kept = kept
    return replay.stats
