"""Reading records for ``buildkit produce``: JSON, a JSON array, or JSON Lines, validated
against the topic's contract before anything is sent.

Each input item is either the event itself, or an envelope
``{"key": ..., "value": {...}, "headers": {...}}`` (the shape ``buildkit consume``
prints, so consume → produce round-trips). Every problem is reported with its
line number and the failing field; one invalid record means nothing is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from buildkit.catalog import TopicSpec
from buildkit.contracts.base import Event
from buildkit.contracts.codec import Codec
from buildkit.errors import InvalidRecords

# Headers the producer writes itself; taken from input only as trace propagation.
_OWN_HEADERS = {"ce_id", "ce_source", "ce_type", "ce_time", "ce_specversion", "content-type"}
_ENVELOPE_KEYS = {"key", "value", "headers", "topic", "partition", "offset", "timestamp"}


@dataclass(frozen=True)
class InputRecord:
    """One validated record, ready to send."""

    line: int
    key: str | None
    value: Event
    size: int
    traceparent: str | None = None
    correlation_id: str | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def iter_json_items(text: str) -> Iterator[tuple[int, Any | json.JSONDecodeError]]:
    """(line, item) for each JSON item in ``text``: an array's elements, a single
    document, or JSON Lines. A malformed item yields its decode error instead."""
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _array_items(text, decoder)
        return
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and stripped.startswith("{"):
        try:
            json.loads(lines[first])
        except json.JSONDecodeError:
            # Not JSON Lines: perhaps one pretty-printed document.
            try:
                yield first + 1, json.loads(text)
                return
            except json.JSONDecodeError:
                pass
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, exc


def _array_items(text: str, decoder: json.JSONDecoder) -> Iterator[tuple[int, Any]]:
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            yield (
                text.count("\n", 0, pos) + 1,
                json.JSONDecodeError("unterminated array", text, pos),
            )
            return
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield line, exc
            return
        yield line, item
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(record)"


def read_records(text: str, source: str, spec: TopicSpec, *, max_bytes: int) -> list[InputRecord]:
    """Parse and validate every record; raise :class:`InvalidRecords` listing all problems."""
    model = spec.value_type
    if model is None:
        raise InvalidRecords(
            source, [(0, f"topic {spec.name} carries raw bytes; produce events elsewhere")]
        )
    codec = Codec.for_model(model)
    records: list[InputRecord] = []
    problems: list[tuple[int, str]] = []
    for line, item in iter_json_items(text):
        if isinstance(item, json.JSONDecodeError):
            problems.append((line, f"malformed JSON: {item.msg} (column {item.colno})"))
            continue
        if not isinstance(item, dict):
            problems.append((line, f"expected a JSON object, got {type(item).__name__}"))
            continue
        envelope = "value" in item and set(item) <= _ENVELOPE_KEYS
        body = item["value"] if envelope else item
        try:
            value = model.model_validate(body)
        except ValidationError as exc:
            for err in exc.errors():
                problems.append((line, f'field "{_field_path(err["loc"])}": {err["msg"]}'))
            continue
        key = item.get("key") if envelope else None
        if key is not None and not isinstance(key, str):
            problems.append((line, f'field "key": expected a string, got {type(key).__name__}'))
            continue
        key = key if key is not None else spec.key_for(value)
        raw_headers = item.get("headers") if envelope else None
        if raw_headers is not None and not isinstance(raw_headers, dict):
            problems.append((line, 'field "headers": expected an object of strings'))
            continue
        headers = {str(k): str(v) for k, v in (raw_headers or {}).items()}
        size = 5 + len(codec.encode(value)) + len((key or "").encode())
        size += sum(len(k) + len(v) for k, v in headers.items()) + 200  # our own headers
        if size > max_bytes:
            problems.append(
                (
                    line,
                    f"record is about {size} bytes, "
                    f"over the {max_bytes}-byte limit (message.max.bytes)",
                )
            )
            continue
        records.append(
            InputRecord(
                line,
                key,
                value,
                size,
                traceparent=headers.pop("traceparent", None),
                correlation_id=headers.pop("correlation_id", None),
                headers=[(k, v.encode()) for k, v in headers.items() if k not in _OWN_HEADERS],
            )
        )
    if problems:
        raise InvalidRecords(source, problems)
    return records
