"""Quality-gate conditions: a tiny boolean grammar over a stage's reported metrics.

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | atom
    atom       := "(" or ")" | comparison
    comparison := metric op number
    metric     := word+            e.g. coverage, phpcs violations, mutation_score
    op         := ">=" | "<=" | ">" | "<" | "==" | "!="
    number     := [+-]digits[.digits][e±digits]["%"]

Precedence is ``not`` > ``and`` > ``or``; keywords are case-insensitive and can't be
words of a metric name. A word starts with a letter or ``_`` and may hold letters,
digits, ``_``, ``.`` and ``-``.

Nothing is ``eval``-ed. The parser is a hand-written recursive descent rather than a
grammar library (lark): the grammar is five rules, and what matters is the error a user
sees in a workflow file — ``expected a number after ">=", got "high"`` at the exact
column — which is simpler to write directly than to translate from a generic
"unexpected token" exception; it also keeps a dependency out.

Semantics, decided here:

* **Percentages**: ``80%`` means the number 80. Agents report percentage metrics on the
  0-100 scale (coverage 85.0 means 85 %), so ``coverage >= 80%`` and ``coverage >= 80``
  compare the same; the ``%`` is kept only for display and round-tripping.
* **Metric names** match case-insensitively, with runs of whitespace, ``_`` and ``-``
  all equivalent: ``phpcs violations`` matches a result key ``phpcs_violations`` or
  ``PHPCS-Violations``. Dots are significant (``coverage.lines`` is its own metric).
* **Equality** is with a relative tolerance of 1e-9, so float noise in a reported
  metric (``0.1 + 0.2``) does not flip ``==``, ``!=``, ``>=`` or ``<=``.
* **Missing metrics** fail the gate, whatever surrounds them: evaluation is three-valued
  (Kleene), so ``not (x > 1)`` with ``x`` missing fails too rather than passing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.roe.errors import ConditionError

__all__ = [
    "And",
    "Comparison",
    "Condition",
    "ConditionError",
    "GateResult",
    "Not",
    "Or",
    "evaluate_all",
    "metric_key",
    "parse_condition",
]

OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_NEGATED = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!=", "!=": "=="}
_KEYWORDS = frozenset({"and", "or", "not"})
_REL_TOL = 1e-9

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<paren>[()])
  | (?P<op>>=|<=|==|!=|>|<)
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?)(?![A-Za-z0-9_.%])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.\-]*)
    """,
    re.VERBOSE,
)
_HINTS = {
    "=": 'use "==" to compare',
    "!": 'use "not" to negate, or "!=" to compare',
    "&": 'use "and"',
    "|": 'use "or"',
}


@dataclass(frozen=True)
class GateResult:
    """Whether a gate passed, and the facts that decided it (``coverage 72.5 < 80``)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


# Three-valued outcome of a sub-condition: True, False, or None when a metric is missing.
_Outcome = tuple[bool | None, list[str]]


def metric_key(name: str) -> str:
    """The form metric names are matched in: lower case, ``_``/``-``/spaces as one space."""
    return " ".join(w for w in re.split(r"[\s_\-]+", name.lower()) if w)


def _fmt(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Condition:
    """A parsed condition. ``str()`` gives its canonical text, which parses back equal."""

    def evaluate(self, metrics: Mapping[str, Any]) -> GateResult:
        """Evaluate against a stage's metrics; a missing metric fails the gate."""
        value, reasons = self._eval(_MetricIndex(metrics))
        return GateResult(passed=value is True, reasons=reasons)

    def metrics(self) -> set[str]:
        """The metric names this condition reads, as written (whitespace-normalized)."""
        raise NotImplementedError

    def _eval(self, index: _MetricIndex) -> _Outcome:
        raise NotImplementedError

    def _precedence(self) -> int:
        return 3  # atoms


@dataclass(frozen=True)
class Comparison(Condition):
    """``metric op threshold``; ``percent`` only records that the threshold was written ``80%``."""

    metric: str
    op: str
    threshold: float
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {_fmt(self.threshold)}{'%' if self.percent else ''}"

    def metrics(self) -> set[str]:
        return {self.metric}

    def _eval(self, index: _MetricIndex) -> _Outcome:
        actual, problem = index.lookup(self.metric)
        if actual is None:
            return None, [problem]
        ok = _compare(actual, self.op, self.threshold)
        shown = self.op if ok else _NEGATED[self.op]
        return ok, [f"{self.metric} {_fmt(actual)} {shown} {_fmt(self.threshold)}"]


@dataclass(frozen=True)
class Not(Condition):
    """``not operand``."""

    operand: Condition

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"not ({inner})" if self.operand._precedence() < 2 else f"not {inner}"

    def metrics(self) -> set[str]:
        return self.operand.metrics()

    def _eval(self, index: _MetricIndex) -> _Outcome:
        value, reasons = self.operand._eval(index)
        return (None if value is None else not value), reasons

    def _precedence(self) -> int:
        return 2


@dataclass(frozen=True)
class And(Condition):
    """All operands hold (flattened: an ``And`` never directly holds an ``And``)."""

    operands: tuple[Condition, ...]

    def __str__(self) -> str:
        return " and ".join(_wrap(c, 1) for c in self.operands)

    def metrics(self) -> set[str]:
        return set().union(*(c.metrics() for c in self.operands))

    def _eval(self, index: _MetricIndex) -> _Outcome:
        return _all([c._eval(index) for c in self.operands])

    def _precedence(self) -> int:
        return 1


@dataclass(frozen=True)
class Or(Condition):
    """At least one operand holds (flattened like :class:`And`)."""

    operands: tuple[Condition, ...]

    def __str__(self) -> str:
        return " or ".join(_wrap(c, 0) for c in self.operands)

    def metrics(self) -> set[str]:
        return set().union(*(c.metrics() for c in self.operands))

    def _eval(self, index: _MetricIndex) -> _Outcome:
        outcomes = [c._eval(index) for c in self.operands]
        if any(v is True for v, _ in outcomes):
            return True, [r for v, rs in outcomes if v is True for r in rs]
        value = None if any(v is None for v, _ in outcomes) else False
        return value, [r for _, rs in outcomes for r in rs]

    def _precedence(self) -> int:
        return 0


def _wrap(child: Condition, parent_precedence: int) -> str:
    text = str(child)
    return f"({text})" if child._precedence() <= parent_precedence else text


def _all(outcomes: list[_Outcome]) -> _Outcome:
    if all(v is True for v, _ in outcomes):
        return True, [r for _, rs in outcomes for r in rs]
    value = False if any(v is False for v, _ in outcomes) else None
    return value, [r for v, rs in outcomes if v is not True for r in rs]


def _compare(actual: float, op: str, threshold: float) -> bool:
    equal = math.isclose(actual, threshold, rel_tol=_REL_TOL, abs_tol=1e-12)
    if op == "==":
        return equal
    if op == "!=":
        return not equal
    if op == ">=":
        return equal or actual > threshold
    if op == "<=":
        return equal or actual < threshold
    if op == ">":
        return not equal and actual > threshold
    return not equal and actual < threshold


class _MetricIndex:
    """A stage's metrics keyed by :func:`metric_key`."""

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self._by_key: dict[str, list[tuple[str, Any]]] = {}
        for name, value in metrics.items():
            self._by_key.setdefault(metric_key(name), []).append((name, value))

    def lookup(self, metric: str) -> tuple[float | None, str]:
        found = self._by_key.get(metric_key(metric), [])
        if not found:
            return None, f'metric "{metric}" missing from the stage\'s results'
        values = {v for _, v in found if isinstance(v, int | float)}
        if len(found) > 1 and len(values) != 1:
            keys = ", ".join(f'"{k}" ({v!r})' for k, v in found)
            return None, f'metric "{metric}" is ambiguous: the results have {keys}'
        value = found[0][1]
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return None, f'metric "{metric}" is not a number in the results: {value!r}'
        return float(value), ""


def evaluate_all(conditions: Iterable[Condition | str], metrics: Mapping[str, Any]) -> GateResult:
    """A stage's gate: every condition must pass (strings are parsed first).

    No conditions pass. Reasons list every fact when the gate passes, and only the
    failing (or missing) ones when it does not.
    """
    index = _MetricIndex(metrics)
    parsed = [parse_condition(c) if isinstance(c, str) else c for c in conditions]
    value, reasons = _all([c._eval(index) for c in parsed])
    return GateResult(passed=value is True, reasons=reasons)


@dataclass(frozen=True)
class _Token:
    kind: str  # word, keyword, op, number, paren, end
    text: str
    column: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = text[pos]
            hint = _HINTS.get(bad)
            if re.match(r"[+\-.\d]", bad):
                hint = "a number must stand alone; a metric name starts with a letter or _"
            raise ConditionError(
                f'unexpected "{bad}"' + (f": {hint}" if hint else ""), pos + 1, text
            )
        kind = m.lastgroup or ""
        if kind == "word" and m.group().lower() in _KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(_Token(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def _error(self, message: str, token: _Token | None = None) -> ConditionError:
        return ConditionError(message, (token or self.tok).column, self.text)

    def _keyword(self, word: str) -> bool:
        if self.tok.kind == "keyword" and self.tok.text.lower() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Condition:
        if self.tok.kind == "end":
            raise ConditionError("condition is empty", 1, self.text)
        cond = self._or()
        if self.tok.kind != "end":
            raise self._error(
                f'unexpected "{self.tok.text}" after a complete condition: '
                'join conditions with "and" or "or"'
            )
        return cond

    def _or(self) -> Condition:
        items = [self._and()]
        while self._keyword("or"):
            items.append(self._and())
        return _flatten(Or, items)

    def _and(self) -> Condition:
        items = [self._not()]
        while self._keyword("and"):
            items.append(self._not())
        return _flatten(And, items)

    def _not(self) -> Condition:
        if self._keyword("not"):
            return Not(self._not())
        return self._atom()

    def _atom(self) -> Condition:
        tok = self.tok
        if tok.kind == "paren" and tok.text == "(":
            self.pos += 1
            inner = self._or()
            if not (self.tok.kind == "paren" and self.tok.text == ")"):
                raise self._error(f'expected ")" to close the "(" at column {tok.column}')
            self.pos += 1
            return inner
        if tok.kind == "word":
            return self._comparison()
        if tok.kind == "end":
            raise self._error('condition ends early: expected a metric name, "not" or "("')
        raise self._error(f'expected a metric name, "not" or "(", got "{tok.text}"')

    def _comparison(self) -> Comparison:
        words = []
        while self.tok.kind == "word":
            words.append(self.tok.text)
            self.pos += 1
        metric = " ".join(words)
        op = self.tok
        if op.kind != "op":
            got = "the end" if op.kind == "end" else f'"{op.text}"'
            raise self._error(
                f"expected a comparison operator ({', '.join(OPERATORS)}) after metric "
                f'"{metric}", got {got}'
            )
        self.pos += 1
        num = self.tok
        if num.kind != "number":
            got = "the end" if num.kind == "end" else f'"{num.text}"'
            also = " (comparing two metrics is not supported)" if num.kind == "word" else ""
            raise self._error(f'expected a number after "{op.text}", got {got}{also}')
        self.pos += 1
        percent = num.text.endswith("%")
        value = float(num.text.rstrip("%"))
        if not math.isfinite(value):
            raise self._error(f'number "{num.text}" is out of range', num)
        return Comparison(metric, op.text, value, percent)


def _flatten(kind: type[And] | type[Or], items: list[Condition]) -> Condition:
    if len(items) == 1:
        return items[0]
    flat: list[Condition] = []
    for item in items:
        flat.extend(item.operands if isinstance(item, kind) else (item,))
    return kind(tuple(flat))


def parse_condition(text: str) -> Condition:
    """Parse one condition, e.g. ``coverage >= 80% and phpcs violations == 0``.

    Raises :class:`ConditionError` with the 1-based column of the problem.
    """
    return _Parser(text).parse()
