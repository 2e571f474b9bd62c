"""CloudEvents binary-mode headers and W3C trace context on every record.

Headers are built per record on the produce hot path, so the constant parts
are encoded once and the variable ones are cheap: the event id is a random
per-producer prefix plus a counter (unique per source, as CloudEvents asks),
the time string is reused within the same millisecond.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

SPECVERSION = b"1.0"
CONTENT_TYPE = b"application/avro"

Headers = list[tuple[str, bytes]]

_rand = random.SystemRandom()


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` for a record that starts a trace."""
    return f"00-{_rand.getrandbits(128):032x}-{_rand.getrandbits(64):016x}-01"


def child_traceparent(parent: str) -> str:
    """A ``traceparent`` in the same trace as ``parent``, with a new span id."""
    parts = parent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return new_traceparent()
    return f"{parts[0]}-{parts[1]}-{_rand.getrandbits(64):016x}-{parts[3]}"


class HeaderFactory:
    """Builds the headers of each record one producer sends."""

    def __init__(self, source: str) -> None:
        self._source = source.encode()
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)
        self._last_ms = -1
        self._last_time = b""
        self._types: dict[str, bytes] = {}

    def new_id(self) -> str:
        """A new event id, unique for this source."""
        return f"{self._prefix}-{next(self._counter)}"

    def _time(self) -> bytes:
        now_ms = time.time_ns() // 1_000_000
        if now_ms != self._last_ms:
            self._last_ms = now_ms
            stamp = datetime.fromtimestamp(now_ms / 1000, UTC)
            self._last_time = (
                stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
            )
        return self._last_time

    def build(
        self,
        ce_type: str,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        extra: Headers | None = None,
    ) -> Headers:
        """Headers for one record of type ``ce_type``."""
        type_bytes = self._types.get(ce_type)
        if type_bytes is None:
            type_bytes = self._types[ce_type] = ce_type.encode()
        ce_id = event_id or self.new_id()
        headers: Headers = [
            ("ce_id", ce_id.encode()),
            ("ce_source", self._source),
            ("ce_type", type_bytes),
            ("ce_time", self._time()),
            ("ce_specversion", SPECVERSION),
            ("content-type", CONTENT_TYPE),
            ("traceparent", (traceparent or new_traceparent()).encode()),
            ("correlation_id", (correlation_id or ce_id).encode()),
        ]
        if extra:
            headers.extend(extra)
        return headers


@dataclass(frozen=True, slots=True)
class Envelope:
    """The CloudEvents attributes and trace context read back from a record's headers."""

    id: str | None
    source: str | None
    type: str | None
    time: str | None
    specversion: str | None
    traceparent: str | None
    correlation_id: str | None

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes | None]] | None) -> Envelope:
        """Parse the headers of a consumed record (missing ones are None)."""
        found: dict[str, str] = {}
        for name, value in headers or ():
            if value is not None and name not in found:
                found[name] = value.decode(errors="replace")
        return cls(
            found.get("ce_id"),
            found.get("ce_source"),
            found.get("ce_type"),
            found.get("ce_time"),
            found.get("ce_specversion"),
            found.get("traceparent"),
            found.get("correlation_id"),
        )


def headers_to_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as a dict of text (the last value of a repeated name wins)."""
    return {
        name: (value.decode(errors="replace") if value is not None else "")
        for name, value in headers or ()
    }
