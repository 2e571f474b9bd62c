"""The audit hash chain as pure functions: encoding, hashing and the chain walk."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buildkit.audit.chain import (
    GENESIS,
    ChainRow,
    HashLookup,
    decode_headers,
    encode_headers,
    link,
    record_hash,
    walk_chain,
)

BASE: dict[str, Any] = dict(
    prev_hash=GENESIS,
    topic="bar.tasks.results",
    partition=2,
    generation=0,
    offset=41,
    timestamp_ms=1_764_000_000_123,
    key=b"task-1",
    value=b"\x00\x00\x00\x00\x07payload",
    headers=encode_headers([("ce_id", b"abc"), ("traceparent", None)]),
)


def test_genesis_is_32_zero_bytes() -> None:
    assert GENESIS == b"\x00" * 32


def test_the_encoding_is_pinned() -> None:
    # A change here breaks every archived chain: make a new DOMAIN version instead.
    assert record_hash(**BASE).hex() == (
        "e1038da778bff503ff0d0b0dd625720918bd70e4d6058311b11de27429f77320"
    )


def _reference_hash(**fields: object) -> bytes:
    """The documented encoding, written out independently of the module."""

    def sized(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    def optional(data: object) -> bytes:
        return b"\x00" if data is None else b"\x01" + sized(data)  # type: ignore[arg-type]

    body = b"".join(
        [
            sized(b"buildkit.audit.chain/v1"),
            fields["prev_hash"],  # type: ignore[list-item]
            sized(str(fields["topic"]).encode()),
            int(fields["partition"]).to_bytes(4, "big", signed=True),  # type: ignore[call-overload]
            int(fields["generation"]).to_bytes(4, "big", signed=True),  # type: ignore[call-overload]
            int(fields["offset"]).to_bytes(8, "big", signed=True),  # type: ignore[call-overload]
            int(fields["timestamp_ms"]).to_bytes(8, "big", signed=True),  # type: ignore[call-overload]
            optional(fields["key"]),
            optional(fields["value"]),
            sized(fields["headers"]),  # type: ignore[arg-type]
        ]
    )
    return hashlib.sha256(body).digest()


def test_the_hash_is_sha256_of_the_documented_encoding() -> None:
    assert record_hash(**BASE) == _reference_hash(**BASE)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("prev_hash", b"\x01" * 32),
        ("topic", "bar.tasks.result"),
        ("partition", 3),
        ("generation", 1),
        ("offset", 42),
        ("timestamp_ms", 1_764_000_000_124),
        ("key", None),
        ("key", b""),
        ("value", None),
        ("value", b"\x00\x00\x00\x00\x07payloaD"),
        ("headers", encode_headers([("ce_id", b"abc"), ("traceparent", b"")])),
        ("headers", encode_headers([("traceparent", None), ("ce_id", b"abc")])),
    ],
)
def test_every_field_changes_the_hash(field: str, other: object) -> None:
    assert record_hash(**{**BASE, field: other}) != record_hash(**BASE)


def test_field_boundaries_are_unambiguous() -> None:
    a = record_hash(**{**BASE, "key": b"ab", "value": b"c"})
    b = record_hash(**{**BASE, "key": b"a", "value": b"bc"})
    assert a != b
    empty = record_hash(**{**BASE, "key": b"", "value": None})
    absent = record_hash(**{**BASE, "key": None, "value": b""})
    assert empty != absent


def test_headers_keep_order_duplicates_and_null_values() -> None:
    headers = [("a", b"1"), ("a", None), ("b", b""), ("a", b"2")]
    assert decode_headers(encode_headers(headers)) == headers
    emptied = [("a", b"1"), ("a", b""), ("b", b""), ("a", b"2")]
    assert encode_headers(headers) != encode_headers(emptied)


@given(
    st.lists(
        st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=40))), max_size=12
    )
)
def test_headers_round_trip(headers: list[tuple[str, bytes | None]]) -> None:
    assert decode_headers(encode_headers(headers)) == headers


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x01", encode_headers([("a", b"1")]) + b"x"])
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="encoded headers"):
        decode_headers(data)


def test_a_previous_hash_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        record_hash(**{**BASE, "prev_hash": b"short"})


# ----------------------------------------------------------------------
# walking a chain


Content = tuple[str, int, int, int, int, bytes | None, bytes | None, bytes]


def _rows(contents: list[Content]) -> list[ChainRow]:
    """Rows appended in order, seq from 1, correctly linked."""
    links = link(GENESIS, contents)
    return [
        ChainRow(seq, *content, prev, digest)
        for seq, (content, (prev, digest)) in enumerate(zip(contents, links, strict=True), 1)
    ]


def _chain(count: int) -> list[ChainRow]:
    return _rows(
        [("t", 0, 0, o, 1000 + o, f"k{o}".encode(), b"v", encode_headers([])) for o in range(count)]
    )


def _find(rows: list[ChainRow]) -> HashLookup:
    def find(digest: bytes) -> tuple[int, int, int] | None:
        for row in rows:
            if row.hash == digest:
                return row.seq, row.generation, row.offset
        return None

    return find


def test_an_intact_chain_verifies() -> None:
    rows = _chain(5)
    assert walk_chain(rows, _find(rows)) == (5, None)
    assert walk_chain([], _find([])) == (0, None)


def test_an_altered_value_is_reported_at_its_offset() -> None:
    rows = _chain(5)
    rows[2] = replace(rows[2], value=b"forged")
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("altered", 2)


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    rows = _chain(5)
    forged = replace(rows[2], value=b"forged")
    rows[2] = replace(forged, hash=forged.recomputed())
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("missing", 3)


def test_a_deleted_row_is_reported_as_missing_at_its_offset() -> None:
    rows = _chain(5)
    del rows[2]
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("missing", 2)


def test_a_deleted_first_row_is_missing() -> None:
    rows = _chain(3)[1:]
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("missing", 0)


def test_a_swapped_pair_is_reordered() -> None:
    rows = _chain(5)
    # Rows 2 and 3 exchange places in seq order.
    rows[2], rows[3] = replace(rows[3], seq=rows[2].seq), replace(rows[2], seq=rows[3].seq)
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("reordered", 3)


def test_an_inserted_row_is_reported() -> None:
    rows = _chain(5)
    extra = ChainRow(99, "t", 0, 0, 7, 0, None, None, encode_headers([]), rows[1].hash, b"")
    extra = replace(extra, hash=extra.recomputed())
    rows.insert(2, extra)
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert broken.kind == "inserted"
    assert broken.offset == 2


def test_offsets_going_backwards_in_a_valid_chain_are_reordered() -> None:
    rows = _rows([("t", 0, 0, offset, 0, None, None, encode_headers([])) for offset in (0, 5, 3)])
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert (broken.kind, broken.offset) == ("reordered", 3)


def test_a_chain_continues_across_generations() -> None:
    rows = _rows(
        [
            ("t", 0, gen, offset, 0, None, b"x", encode_headers([]))
            for gen, offset in ((0, 0), (0, 1), (1, 0), (1, 1))
        ]
    )
    assert walk_chain(rows, _find(rows)) == (4, None)
    # Moving a row into another generation changes what its hash covers.
    rows[2] = replace(rows[2], generation=0)
    _, broken = walk_chain(rows, _find(rows))
    assert broken is not None
    assert broken.kind == "altered"


# ----------------------------------------------------------------------
# the package surface


def test_the_public_surface_is_pinned_and_cheap_to_import() -> None:
    import subprocess
    import sys

    import buildkit.audit

    assert sorted(buildkit.audit.__all__) == [
        "ArchiveReplay",
        "ArchiveStats",
        "ChainProblem",
        "VerifyResult",
        "run_archiver",
        "verify_archive",
    ]
    for name in buildkit.audit.__all__:
        assert getattr(buildkit.audit, name) is not None
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, buildkit.audit; "
            "top = {m.split('.')[0] for m in sys.modules}; "
            "print(sorted(top & {'psycopg', 'confluent_kafka'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]"
