"""``buildkit audit verify``: recompute every chain of the archive and report where it breaks.

Each (topic, partition) chain is read in ``seq`` order (a server-side cursor,
so an archive of any size streams) and every row's hash is recomputed from its
content and its stored previous hash. The first problem of each chain is
reported with its topic, partition, generation and offset:

* ``altered`` — a row's content (or hash) is not what was archived;
* ``missing`` — a row does not link to the row before it, and the row it links
  to is gone (deleted);
* ``reordered`` — a row links to a row stored after it, or offsets go backwards;
* ``inserted`` — a row links to an earlier row than the one before it: rows
  were added in between.

A chain can only prove what comes before its last row: rows deleted from the
end of a chain leave a shorter, valid chain. The row counts in the result are
there to compare against an earlier run.
"""

from __future__ import annotations

from collections.abc import Generator

import psycopg
from pydantic import BaseModel

from buildkit import db
from buildkit.audit.chain import ChainRow, ProblemKind, walk_chain
from buildkit.audit.store import COLUMNS, require_schema
from buildkit.settings import Settings

_FETCH = 2000


class ChainProblem(BaseModel):
    """The first place one chain does not verify."""

    kind: ProblemKind
    topic: str
    partition: int
    generation: int
    offset: int
    seq: int
    detail: str

    def describe(self) -> str:
        """One line: what, where."""
        return f"{self.kind}: {self.topic}[{self.partition}] offset {self.offset} — {self.detail}"


class ChainSummary(BaseModel):
    """One chain: how many rows were checked and whether it verified."""

    topic: str
    partition: int
    rows: int
    generations: int
    ok: bool


class VerifyResult(BaseModel):
    """What ``verify`` found: every chain, and the first problem of each broken one."""

    rows: int
    chains: list[ChainSummary]
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        """True when every chain verified."""
        return not self.problems

    def summary(self) -> str:
        """``N rows in M chains verified`` or how many chains are broken."""
        if self.ok:
            return f"{self.rows} rows in {len(self.chains)} chains verified"
        return (
            f"{len(self.problems)} of {len(self.chains)} chains do not verify "
            f"({self.rows} rows read)"
        )


def verify_archive(settings: Settings, topics: list[str] | None = None) -> VerifyResult:
    """Verify every chain (or those of ``topics``) of the archive in ``BAR_DATABASE_URL``."""
    with db.connect(settings, autocommit=False) as conn:
        # One snapshot for the whole walk: rows the archiver appends meanwhile are not half-seen.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        require_schema(conn, settings)
        if topics is None:
            chains = conn.execute(
                "SELECT topic, partition FROM audit_records GROUP BY topic, partition "
                "ORDER BY topic, partition"
            ).fetchall()
        else:
            chains = conn.execute(
                "SELECT topic, partition FROM audit_records WHERE topic = ANY(%s) "
                "GROUP BY topic, partition ORDER BY topic, partition",
                (topics,),
            ).fetchall()
        total = 0
        summaries: list[ChainSummary] = []
        problems: list[ChainProblem] = []
        for topic, partition in chains:
            summary, problem = _verify_chain(conn, topic, partition)
            total += summary.rows
            summaries.append(summary)
            if problem is not None:
                problems.append(problem)
        return VerifyResult(rows=total, chains=summaries, problems=problems)


def _verify_chain(
    conn: psycopg.Connection, topic: str, partition: int
) -> tuple[ChainSummary, ChainProblem | None]:
    generations: set[int] = set()

    def find(digest: bytes) -> tuple[int, int, int] | None:
        found = conn.execute(
            'SELECT seq, generation, "offset" FROM audit_records '
            "WHERE topic = %s AND partition = %s AND hash = %s ORDER BY seq LIMIT 1",
            (topic, partition, digest),
        ).fetchone()
        return None if found is None else (found[0], found[1], found[2])

    rows = _chain_rows(conn, topic, partition, generations)
    try:
        count, broken = walk_chain(rows, find)
    finally:
        rows.close()  # closes the server-side cursor when the walk stopped early
    summary = ChainSummary(
        topic=topic,
        partition=partition,
        rows=count,
        generations=len(generations),
        ok=broken is None,
    )
    if broken is None:
        return summary, None
    return summary, ChainProblem(
        kind=broken.kind,
        topic=topic,
        partition=partition,
        generation=broken.row.generation,
        offset=broken.offset,
        seq=broken.row.seq,
        detail=broken.detail,
    )


def _chain_rows(
    conn: psycopg.Connection, topic: str, partition: int, generations: set[int]
) -> Generator[ChainRow, None, None]:
    """One chain's rows in seq order, streamed through a server-side cursor."""
    with conn.cursor(name="audit_verify") as cur:
        cur.itersize = _FETCH
        cur.execute(
            f"SELECT {COLUMNS} FROM audit_records "  # noqa: S608 — a constant column list
            "WHERE topic = %s AND partition = %s ORDER BY seq",
            (topic, partition),
        )
        for seq, t, p, gen, offset, ts, key, value, headers, prev, digest in cur:
            generations.add(gen)
            yield ChainRow(
                seq,
                t,
                p,
                gen,
                offset,
                ts,
                None if key is None else bytes(key),
                None if value is None else bytes(value),
                bytes(headers),
                bytes(prev),
                bytes(digest),
            )
