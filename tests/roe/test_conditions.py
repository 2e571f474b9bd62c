"""The quality-gate condition grammar: parsing, canonical text, evaluation, errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.roe.conditions import (
    OPERATORS,
    And,
    Comparison,
    Condition,
    ConditionError,
    GateResult,
    Not,
    Or,
    evaluate_all,
    metric_key,
    parse_condition,
)


def test_parses_the_architecture_documents_gate_conditions() -> None:
    assert parse_condition("coverage >= 80%") == Comparison("coverage", ">=", 80.0, percent=True)
    assert parse_condition("phpcs violations == 0") == Comparison("phpcs violations", "==", 0.0)


@pytest.mark.parametrize(
    "text",
    ["mutation_score > 0.6", "coverage.lines >= 90", "error-rate < 1.5", "p95 latency ms <= 250"],
)
def test_metric_names_may_hold_spaces_dots_underscores_and_hyphens(text: str) -> None:
    cond = parse_condition(text)
    assert isinstance(cond, Comparison)
    assert str(cond) == text


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    cond = parse_condition("not a > 1 and b > 1 or c > 1")
    a, b, c = (Comparison(m, ">", 1.0) for m in "abc")
    assert cond == Or((And((Not(a), b)), c))


def test_parentheses_override_precedence() -> None:
    cond = parse_condition("not (a > 1 and (b > 1 or c > 1))")
    a, b, c = (Comparison(m, ">", 1.0) for m in "abc")
    assert cond == Not(And((a, Or((b, c)))))


def test_keywords_are_case_insensitive_and_canonical_text_is_lower_case() -> None:
    cond = parse_condition("NOT a > 1 AND b > 1 Or c > 1")
    assert str(cond) == "not a > 1 and b > 1 or c > 1"


def test_canonical_text_normalizes_whitespace_and_keeps_needed_parentheses_only() -> None:
    cond = parse_condition("  ( phpcs   violations==0 )and(a>=1 or b<=-2.50)  and ((c != 3e2))")
    assert str(cond) == "phpcs violations == 0 and (a >= 1 or b <= -2.5) and c != 300"


def test_nested_same_operator_groups_flatten() -> None:
    assert parse_condition("a > 1 and (b > 1 and c > 1)") == parse_condition(
        "a > 1 and b > 1 and c > 1"
    )


def test_metrics_lists_every_metric_read() -> None:
    cond = parse_condition("coverage >= 80% and (phpcs violations == 0 or not mutation_score < 60)")
    assert cond.metrics() == {"coverage", "phpcs violations", "mutation_score"}


def test_failing_comparison_explains_with_the_actual_value() -> None:
    result = parse_condition("coverage >= 80%").evaluate({"coverage": 72.5})
    assert result == GateResult(passed=False, reasons=["coverage 72.5 < 80"])


def test_passing_comparison_explains_too() -> None:
    result = parse_condition("coverage >= 80%").evaluate({"coverage": 85.0})
    assert result == GateResult(passed=True, reasons=["coverage 85 >= 80"])


def test_percentages_compare_as_plain_numbers_on_the_0_to_100_scale() -> None:
    metrics = {"coverage": 80.0}
    assert parse_condition("coverage >= 80%").evaluate(metrics).passed
    assert parse_condition("coverage >= 80").evaluate(metrics).passed
    assert not parse_condition("coverage > 80%").evaluate(metrics).passed


@pytest.mark.parametrize(
    "key", ["phpcs_violations", "PHPCS Violations", "phpcs-violations", "phpcs  violations"]
)
def test_metric_names_match_ignoring_case_and_space_underscore_hyphen(key: str) -> None:
    assert parse_condition("phpcs violations == 0").evaluate({key: 0}).passed


def test_dots_in_metric_names_are_significant() -> None:
    result = parse_condition("coverage.lines >= 80").evaluate({"coverage lines": 90})
    assert not result.passed


def test_missing_metric_fails_the_gate_and_is_named() -> None:
    result = parse_condition("phpcs violations == 0").evaluate({"coverage": 90})
    assert result == GateResult(
        passed=False, reasons=['metric "phpcs violations" missing from the stage\'s results']
    )


def test_missing_metric_fails_even_under_not() -> None:
    assert not parse_condition("not coverage < 80").evaluate({}).passed


def test_or_passes_on_one_known_branch_even_if_another_metric_is_missing() -> None:
    result = parse_condition("coverage >= 80 or waiver == 1").evaluate({"coverage": 90})
    assert result == GateResult(passed=True, reasons=["coverage 90 >= 80"])


def test_and_failure_lists_only_the_failing_parts() -> None:
    cond = parse_condition("coverage >= 80 and phpcs violations == 0 and mutation_score > 50")
    result = cond.evaluate({"coverage": 90, "phpcs_violations": 3})
    assert result.reasons == [
        "phpcs violations 3 != 0",
        'metric "mutation_score" missing from the stage\'s results',
    ]


def test_not_keeps_the_facts_that_decided_it() -> None:
    result = parse_condition("not coverage >= 80").evaluate({"coverage": 90})
    assert result == GateResult(passed=False, reasons=["coverage 90 >= 80"])


def test_equality_tolerates_float_noise() -> None:
    assert parse_condition("ratio == 0.3").evaluate({"ratio": 0.1 + 0.2}).passed
    assert not parse_condition("ratio > 0.3").evaluate({"ratio": 0.1 + 0.2}).passed


@pytest.mark.parametrize("value", ["high", None, True, float("nan")])
def test_a_non_numeric_metric_fails_the_gate(value: object) -> None:
    result = parse_condition("coverage >= 80").evaluate({"coverage": value})
    assert not result.passed
    assert result.reasons[0].startswith('metric "coverage" is not a number')


def test_two_result_keys_for_one_metric_with_different_values_are_ambiguous() -> None:
    result = parse_condition("x == 1").evaluate({"a_b": 1, "x": 1, "X": 2})
    assert not result.passed
    assert "ambiguous" in result.reasons[0]


def test_evaluate_all_requires_every_condition_and_accepts_text() -> None:
    conditions = ["coverage >= 80%", parse_condition("phpcs violations == 0")]
    ok = evaluate_all(conditions, {"coverage": 85.0, "phpcs violations": 0})
    assert ok == GateResult(passed=True, reasons=["coverage 85 >= 80", "phpcs violations 0 == 0"])
    bad = evaluate_all(conditions, {"coverage": 72.5, "phpcs violations": 0})
    assert bad == GateResult(passed=False, reasons=["coverage 72.5 < 80"])


def test_evaluate_all_of_nothing_passes() -> None:
    assert evaluate_all([], {}) == GateResult(passed=True, reasons=[])


def test_metric_key_normalizes_case_and_separators() -> None:
    assert metric_key("  PHPCS__violations-count ") == "phpcs violations count"


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", 1, "condition is empty"),
        ("   ", 1, "condition is empty"),
        (
            "coverage",
            9,
            '(>=, <=, ==, !=, >, <) after metric "coverage", got the end',
        ),
        ("coverage 80", 10, "expected a comparison operator"),
        ("coverage >=", 12, 'expected a number after ">=", got the end'),
        ("coverage >= high", 13, "comparing two metrics is not supported"),
        ("phpcs violations = 0", 18, 'unexpected "=": use "==" to compare'),
        ("a > 1 && b > 1", 7, 'unexpected "&": use "and"'),
        ("(a > 1", 7, 'expected ")" to close the "(" at column 1'),
        ("a > 1)", 6, 'unexpected ")" after a complete condition'),
        (
            "a > 1 b > 2",
            7,
            'unexpected "b" after a complete condition: join conditions with "and" or "or"',
        ),
        ("a > 1 and", 10, 'condition ends early: expected a metric name, "not" or "("'),
        ("a > 1 or or b > 1", 10, 'expected a metric name, "not" or "(", got "or"'),
        ("95th > 1", 1, 'unexpected "9"'),
        ("x > 80abc", 5, 'unexpected "8"'),
        ("x > 1e999", 5, 'number "1e999" is out of range'),
        ("x > 80%%", 5, 'unexpected "8"'),
    ],
)
def test_parse_errors_name_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(ConditionError) as err:
        parse_condition(text)
    assert err.value.column == column
    assert message in err.value.message
    assert f"at column {column}" in str(err.value)


# -- properties -----------------------------------------------------------------------

_words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,6}", fullmatch=True).filter(
    lambda w: w.lower() not in {"and", "or", "not"}
)
_comparisons = st.builds(
    Comparison,
    st.lists(_words, min_size=1, max_size=3).map(" ".join),
    st.sampled_from(OPERATORS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
_conditions = st.recursive(
    _comparisons,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=8,
)


def _normalized(cond: Condition) -> Condition:
    """What the parser builds: nested And-in-And / Or-in-Or flattened."""
    if isinstance(cond, Not):
        return Not(_normalized(cond.operand))
    if isinstance(cond, And | Or):
        flat: list[Condition] = []
        for child in map(_normalized, cond.operands):
            same = isinstance(child, type(cond))
            flat.extend(child.operands if isinstance(child, And | Or) and same else (child,))
        return type(cond)(tuple(flat))
    return cond


@given(_conditions)
def test_canonical_text_parses_back_to_the_same_condition(cond: Condition) -> None:
    parsed = parse_condition(str(cond))
    assert parsed == _normalized(cond)
    assert str(parsed) == str(_normalized(cond))


@given(_conditions, st.data())
def test_reparsing_canonical_text_is_a_fixed_point_with_any_spacing_and_case(
    cond: Condition, data: st.DataObject
) -> None:
    text = str(cond)
    # respace around operators/parentheses and change keyword case: same condition
    messy = re.sub(r"\s+", lambda _: data.draw(st.sampled_from([" ", "  ", "\t"])), text)
    messy = re.sub(
        r"\b(and|or|not)\b", lambda m: data.draw(st.sampled_from([m[1], m[1].upper()])), messy
    )
    once = parse_condition(messy)
    assert parse_condition(str(once)) == once == parse_condition(text)


@given(st.text(alphabet=st.sampled_from(list("ab ()<>=!%.-_9 andortx")), max_size=30))
def test_any_text_either_parses_or_raises_condition_error(text: str) -> None:
    try:
        cond = parse_condition(text)
    except ConditionError as err:
        assert 1 <= err.column <= len(text) + 1
    else:
        assert parse_condition(str(cond)) == cond
