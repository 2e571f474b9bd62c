"""The audit archive's hash chain: a canonical encoding of each archived record, SHA-256 over it.

Every (topic, partition) is one chain. Each row's hash covers the previous row's
hash and every field of the record, so changing, removing or moving a row breaks
the chain from that row on. The first row of a chain links to :data:`GENESIS`.

The encoding is unambiguous: every variable-length field is length-prefixed,
optional fields (key, value, header values) carry a presence byte, so ``None``
and ``b""`` differ and no two different records encode alike. It is versioned by
:data:`DOMAIN`; a change to it is a new domain string, never an edit of this one.

``generation`` is hashed too: the chain of a partition continues across broker
generations (see :mod:`buildkit.audit.archiver`), so a row moved from one
generation to another is a changed row.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from buildkit.records import HeaderList

#: The previous hash of the first row of every (topic, partition) chain.
GENESIS = bytes(32)
#: Leads every encoded record: names the encoding and its version.
DOMAIN = b"buildkit.audit.chain/v1"

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_ABSENT = b"\x00"
_PRESENT = b"\x01"


def _sized(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _optional(data: bytes | None) -> bytes:
    return _ABSENT if data is None else _PRESENT + _U32.pack(len(data)) + data


def encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    """Headers as bytes: a count, then each name and (optional) value, in order.

    Order, duplicate names and ``None`` values are kept; :func:`decode_headers`
    is its inverse. This is also how the archive stores headers.
    """
    parts = [_U32.pack(len(headers))]
    for name, value in headers:
        parts.append(_sized(name.encode()))
        parts.append(_optional(value))
    return b"".join(parts)


def decode_headers(data: bytes) -> HeaderList:
    """The header list :func:`encode_headers` encoded; ValueError if ``data`` is malformed."""
    view = memoryview(data)
    pos = 0

    def take(size: int) -> bytes:
        nonlocal pos
        if pos + size > len(view):
            raise ValueError(
                f"encoded headers end early: need {size} byte(s) at {pos} of {len(view)}"
            )
        chunk = bytes(view[pos : pos + size])
        pos += size
        return chunk

    (count,) = _U32.unpack(take(4))
    headers: HeaderList = []
    for _ in range(count):
        (name_size,) = _U32.unpack(take(4))
        name = take(name_size).decode()
        flag = take(1)
        value: bytes | None = None
        if flag == _PRESENT:
            (value_size,) = _U32.unpack(take(4))
            value = take(value_size)
        elif flag != _ABSENT:
            raise ValueError(f"encoded headers: bad presence byte {flag!r} at {pos - 1}")
        headers.append((name, value))
    if pos != len(view):
        raise ValueError(f"encoded headers: {len(view) - pos} trailing byte(s)")
    return headers


def record_hash(
    prev_hash: bytes,
    topic: str,
    partition: int,
    generation: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: bytes,
) -> bytes:
    """SHA-256 of one chain link; ``headers`` as :func:`encode_headers` gives them."""
    if len(prev_hash) != 32:
        raise ValueError(f"previous hash must be 32 bytes, not {len(prev_hash)}")
    digest = hashlib.sha256()
    digest.update(_sized(DOMAIN))
    digest.update(prev_hash)
    digest.update(_sized(topic.encode()))
    digest.update(_I32.pack(partition))
    digest.update(_I32.pack(generation))
    digest.update(_I64.pack(offset))
    digest.update(_I64.pack(timestamp_ms))
    digest.update(_optional(key))
    digest.update(_optional(value))
    digest.update(_sized(headers))
    return digest.digest()


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One archived row as the verifier sees it."""

    seq: int
    topic: str
    partition: int
    generation: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: bytes
    prev_hash: bytes
    hash: bytes

    def recomputed(self) -> bytes:
        """The hash this row's content and stored previous hash should have."""
        return record_hash(
            self.prev_hash,
            self.topic,
            self.partition,
            self.generation,
            self.offset,
            self.timestamp_ms,
            self.key,
            self.value,
            self.headers,
        )


ProblemKind = Literal["altered", "missing", "reordered", "inserted"]


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a chain does not verify."""

    kind: ProblemKind
    row: ChainRow
    offset: int  # the offset the problem is about (for "missing": the first one gone)
    detail: str


#: Where a hash occurs in the chain being walked: (seq, generation, offset) of its row, or None.
HashLookup = Callable[[bytes], tuple[int, int, int] | None]


def walk_chain(rows: Iterable[ChainRow], find: HashLookup) -> tuple[int, Break | None]:
    """Check one (topic, partition) chain, rows in ``seq`` order.

    Returns how many rows were read and the first break (None when intact).
    ``find`` is consulted only at a break, to tell a moved row (its predecessor
    comes later), an inserted one (its predecessor comes earlier) and a missing
    one (its predecessor is nowhere) apart.
    """
    count = 0
    expected = GENESIS
    previous: ChainRow | None = None
    for row in rows:
        count += 1
        problem = _check(row, previous, expected, find)
        if problem is not None:
            return count, problem
        expected = row.hash
        previous = row
    return count, None


def _check(
    row: ChainRow, previous: ChainRow | None, expected: bytes, find: HashLookup
) -> Break | None:
    where = f"generation {row.generation}, offset {row.offset} (seq {row.seq})"
    if row.recomputed() != row.hash:
        return Break("altered", row, row.offset, f"row at {where} does not match its hash")
    if row.prev_hash != expected:
        found = find(row.prev_hash)
        if found is not None and found[0] > row.seq:
            return Break(
                "reordered",
                row,
                row.offset,
                f"row at {where} comes before the row it follows "
                f"(generation {found[1]}, offset {found[2]}, seq {found[0]})",
            )
        if found is not None:
            return Break(
                "inserted",
                row,
                row.offset,
                f"row(s) were inserted between generation {found[1]}, offset {found[2]} "
                f"(seq {found[0]}) and the row at {where}",
            )
        if previous is None:
            return Break(
                "missing", row, row.offset - 1, f"row(s) before {where}, the first row, are missing"
            )
        first_gone = previous.offset + 1 if previous.generation == row.generation else row.offset
        return Break(
            "missing",
            row,
            first_gone,
            f"row(s) between generation {previous.generation}, offset {previous.offset} "
            f"and {where} are missing",
        )
    position = (row.generation, row.offset)
    if previous is not None and position <= (previous.generation, previous.offset):
        return Break(
            "reordered",
            row,
            row.offset,
            f"row at {where} comes after generation {previous.generation}, "
            f"offset {previous.offset} (seq {previous.seq})",
        )
    return None


def link(
    prev_hash: bytes,
    rows: Iterable[tuple[str, int, int, int, int, bytes | None, bytes | None, bytes]],
) -> Iterator[tuple[bytes, bytes]]:
    """(prev_hash, hash) of each row appended after ``prev_hash``, in order.

    Rows are (topic, partition, generation, offset, timestamp_ms, key, value, headers).
    """
    current = prev_hash
    for row in rows:
        new = record_hash(current, *row)
        yield current, new
        current = new
