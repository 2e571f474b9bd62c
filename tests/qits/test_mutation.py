"""Mutation testing on small sample projects built in tmp_path (a few mutants each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qits.errors import QualityToolError
from qits.mutation import (
    Mutant,
    WorkingCopy,
    operator_group,
    plan_mutants,
    run_mutation_test,
    sample_evenly,
)
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


def test_sample_evenly_spreads_over_the_plan_and_is_deterministic():
    items = list(range(10))
    assert sample_evenly(items, 3) == [0, 3, 6]
    assert sample_evenly(items, 3) == sample_evenly(list(items), 3)
    assert sample_evenly(items, 5) == [0, 2, 4, 6, 8]
    assert sample_evenly(items, 10) == sample_evenly(items, 99) == sample_evenly(items, None)
    assert sample_evenly(items, None) == items


def test_max_mutants_runs_the_same_even_sample_every_time(tmp_path: Path):
    src, tests = make_project(tmp_path, STRONG_TESTS)
    expected = [(p.line, p.operator) for p in sample_evenly(plan_mutants(src), 4)]

    def run() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        report = fast(
            src,
            tests,
            max_mutants=4,
            on_progress=lambda m, done, total: seen.append((m.line, m.operator)),
        )
        assert (report.planned, report.sampled, report.total) == (11, 4, 4)
        assert report.score == 100.0
        return seen

    assert run() == run() == expected
    assert {line for line, _ in expected} == {2, 6}  # both functions, not just the first


def test_max_mutants_above_the_plan_runs_everything_and_below_one_is_refused(tmp_path: Path):
    src, tests = make_project(tmp_path, WEAK_TESTS)
    report = fast(src, tests, operators=["conditional"], max_mutants=50)
    assert (report.planned, report.sampled, report.total, report.survived) == (5, 5, 5, 1)
    with pytest.raises(QualityToolError, match="max_mutants"):
        fast(src, tests, max_mutants=0)


def make_modules(root: Path) -> tuple[Path, Path]:
    """A plain folder of modules (no package) with a subfolder, and tests for it."""
    src = root / "mods"
    (src / "sub").mkdir(parents=True)
    (src / "calc.py").write_text("def double(x):\n    return x * 2\n")
    (src / "checks.py").write_text("def positive(x):\n    return x > 0\n")
    (src / "sub" / "calc.py").write_text("def triple(x):\n    return x * 3\n")
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_mods.py").write_text(
        "from calc import double\nfrom checks import positive\n\n"
        "def test_it():\n    assert double(3) == 6\n    assert positive(1)\n"
    )
    return src, tests


def test_files_selects_sources_by_glob_relative_to_src(tmp_path: Path):
    src, tests = make_modules(tmp_path)

    def files_of(globs: list[str] | None) -> set[str]:
        return {p.rel_path.as_posix() for p in plan_mutants(src, files=globs)}

    assert files_of(None) == {"calc.py", "checks.py", "sub/calc.py"}
    assert files_of(["calc.py"]) == {"calc.py"}  # the top-level file only
    assert files_of(["sub/*.py"]) == {"sub/calc.py"}
    assert files_of(["*calc.py"]) == {"calc.py", "sub/calc.py"}
    assert files_of(["calc.py", "checks.py"]) == {"calc.py", "checks.py"}
    report = fast(src, tests, files=["checks.py"])
    assert report.status == "completed"
    assert report.planned == report.sampled == report.total == 5  # > -> == != < <= >=
    assert {m.file for m in report.survivors} == {"checks.py"}
    assert fast(src, tests, files=["nothing*.py"]).status == "no_mutants"


PLUGIN = """\
import pytest


@pytest.fixture
def factor():
    return 4
"""

PLUGIN_TESTS = """\
import os

from shop import total


def test_total(factor):
    assert "QITS_DROPPED" not in os.environ
    assert total(3, factor) == int(os.environ["EXPECTED_TOTAL"])
"""


def test_prepare_copy_extra_env_and_pytest_args_reach_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src, tests = make_project(tmp_path, PLUGIN_TESTS)
    monkeypatch.setenv("QITS_DROPPED", "1")
    copies: list[WorkingCopy] = []

    def prepare(copy: WorkingCopy) -> None:
        assert (copy.src / "__init__.py").read_text() == SOURCE
        assert (copy.tests / "test_shop.py").exists()
        (copy.root / "shop_plugin.py").write_text(PLUGIN)
        copies.append(copy)

    report = fast(
        src,
        tests,
        operators=["arithmetic"],
        pytest_args=["-p", "shop_plugin"],
        extra_env={"EXPECTED_TOTAL": "12", "QITS_DROPPED": None},
        prepare_copy=prepare,
    )
    assert report.status == "completed", report.baseline_output
    assert report.killed == report.total == 6
    assert len(copies) == 2 and len({c.root for c in copies}) == 2  # one per worker
    # QITS_DROPPED (set here) was removed, or the run above would have failed; and without
    # the plugin module or without EXPECTED_TOTAL, the baseline fails.
    without_plugin = fast(src, tests, pytest_args=["-p", "shop_plugin"])
    assert without_plugin.status == "baseline_failed"
    without_env = fast(
        src,
        tests,
        pytest_args=["-p", "shop_plugin"],
        extra_env={"QITS_DROPPED": None},
        prepare_copy=prepare,
    )
    assert without_env.status == "baseline_failed"
    assert "EXPECTED_TOTAL" in (without_env.baseline_output or "")


def test_a_hanging_baseline_is_reported_after_baseline_timeout_s(tmp_path: Path):
    src, tests = make_project(tmp_path, "import time\n\ndef test_hang():\n    time.sleep(30)\n")
    report = fast(src, tests, baseline_timeout_s=1)
    assert report.status == "baseline_failed"
    assert "longer than 1" in (report.baseline_output or "")
