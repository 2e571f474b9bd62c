"""Mutation testing on small sample projects built in tmp_path (a few mutants each)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from qits.mutation import Mutant, operator_group, plan_mutants, run_mutation_test
from qits.quality_cli import mutation_test_command

SOURCE = """\
def total(price, qty):
    return price * qty


def is_adult(age):
    return age >= 18
"""

STRONG_TESTS = """\
from shop import is_adult, total


def test_total():
    assert total(3, 4) == 12
    assert total(2, 1) == 2


def test_is_adult_boundary():
    assert is_adult(18)
    assert not is_adult(17)
    assert is_adult(40)
"""

# Misses the boundary: `age > 18` and `age != 18`... pass as long as 18 itself is never tried.
WEAK_TESTS = """\
from shop import is_adult, total


def test_total():
    assert total(3, 4) == 12
    assert total(2, 1) == 2


def test_is_adult():
    assert is_adult(40)
    assert not is_adult(5)
"""


def make_project(root: Path, tests: str) -> tuple[Path, Path]:
    src = root / "src" / "shop"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(SOURCE)
    test_dir = root / "tests"
    test_dir.mkdir()
    (test_dir / "test_shop.py").write_text(tests)
    return src, test_dir


def fast(src: Path, tests: Path, **kwargs: object) -> object:
    return run_mutation_test(src, tests, workers=2, load_plugins=False, **kwargs)  # type: ignore[arg-type]


def test_operator_groups_map_to_cosmic_ray_operators():
    assert operator_group("core/ReplaceBinaryOperator_Add_Sub") == "arithmetic"
    assert operator_group("core/ReplaceBinaryOperator_Add_BitOr") is None
    assert operator_group("core/ReplaceComparisonOperator_Lt_LtE") == "conditional"
    assert operator_group("core/ReplaceAndWithOr") == "logical"
    assert operator_group("core/NumberReplacer") is None


def test_plan_counts_only_the_chosen_groups(tmp_path: Path):
    src, _ = make_project(tmp_path, STRONG_TESTS)
    arithmetic = plan_mutants(src, ["arithmetic"])
    conditional = plan_mutants(src, ["conditional"])
    assert {p.group for p in arithmetic} == {"arithmetic"}
    assert len(arithmetic) == 6  # * -> + - / // % **
    assert len(conditional) == 5  # >= -> == != < <= >
    assert {p.line for p in conditional} == {6}


def test_strong_tests_kill_every_mutant(tmp_path: Path):
    src, tests = make_project(tmp_path, STRONG_TESTS)
    seen: list[tuple[int, int]] = []
    report = fast(src, tests, on_progress=lambda m, done, total: seen.append((done, total)))
    assert report.status == "completed"
    assert report.score == 100.0
    assert report.killed == report.total == 11
    assert report.survivors == []
    assert seen[-1] == (11, 11)


def test_weak_tests_report_survivors_with_file_line_and_change(tmp_path: Path):
    src, tests = make_project(tmp_path, WEAK_TESTS)
    report = fast(src, tests, operators=["conditional"])
    assert report.status == "completed"
    assert report.total == 5
    assert report.survived == 1
    assert report.score == 80.0
    [survivor] = report.survivors
    assert survivor == Mutant(
        file="__init__.py",
        line=6,
        operator="core/ReplaceComparisonOperator_GtE_Gt",
        group="conditional",
        change="return age >= 18 → return age > 18",
        diff=survivor.diff,
        outcome="survived",
    )
    assert "-    return age >= 18" in survivor.diff
    assert "+    return age > 18" in survivor.diff


def test_user_files_are_never_mutated(tmp_path: Path):
    src, tests = make_project(tmp_path, WEAK_TESTS)
    fast(src, tests, operators=["conditional"])
    assert (src / "__init__.py").read_text() == SOURCE
    assert sorted(p.name for p in src.iterdir()) == ["__init__.py"]


def test_red_baseline_is_reported_instead_of_a_score(tmp_path: Path):
    src, tests = make_project(tmp_path, "def test_broken():\n    assert 1 == 2\n")
    report = fast(src, tests)
    assert report.status == "baseline_failed"
    assert report.score is None
    assert report.total == 0
    assert "assert 1 == 2" in (report.baseline_output or "")
    assert "baseline failed" in report.summary


def test_a_mutant_that_loops_forever_times_out(tmp_path: Path):
    src = tmp_path / "loop"
    src.mkdir()
    (src / "countdown.py").write_text(
        "def countdown(n):\n    while n > 0:\n        n = n - 1\n    return n\n"
    )
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_countdown.py").write_text(
        "from countdown import countdown\n\ndef test_it():\n    assert countdown(3) == 0\n"
    )
    report = fast(src, tests, operators=["arithmetic"], timeout_s=1)
    # n - 1 -> n + 1, n * 1, n / 1 ... never reach 0: timeouts, which count as detected.
    assert report.timeout >= 3
    assert report.killed + report.timeout + report.survived == report.total == 6
    assert report.score == round((report.killed + report.timeout) * 100 / 6, 2)


def test_cli_prints_json_and_fails_under_threshold(tmp_path: Path):
    src, tests = make_project(tmp_path, WEAK_TESTS)
    app = typer.Typer()
    app.command()(mutation_test_command)
    args = ["--src", str(src), "--tests", str(tests), "-o", "conditional", "--no-plugins"]
    result = CliRunner().invoke(app, [*args, "--json", "--fail-under", "90"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["score"] == 80.0
    assert data["survivors"][0]["line"] == 6


def test_cli_names_a_missing_source_path(tmp_path: Path):
    app = typer.Typer()
    app.command()(mutation_test_command)
    result = CliRunner().invoke(app, ["--src", str(tmp_path / "nope"), "--tests", str(tmp_path)])
    assert result.exit_code == 1
    assert "nope" in result.output


def test_a_single_file_inside_a_package_can_be_the_source(tmp_path: Path):
    src, tests = make_project(tmp_path, WEAK_TESTS)
    report = fast(src / "__init__.py", tests, operators=["conditional"])
    assert (report.total, report.survived) == (5, 1)
    assert report.survivors[0].file == "__init__.py"
