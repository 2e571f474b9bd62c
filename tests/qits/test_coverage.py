"""Coverage of a test run, and of a FastAPI server driven over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from qits.coverage import coverage_report, run_coverage, serve_under_coverage
from qits.errors import PathNotFound
from qits.quality_cli import coverage_command

# 6 statements; the test runs sign(5), so lines 3 (return -1) and 8 (return 0) never run.
MATHS = """\
def sign(x):
    if x < 0:
        return -1
    return 1


def unused():
    return 0
"""
TESTS = """\
from maths import sign


def test_sign_positive():
    assert sign(5) == 1
"""

API = """\
from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int):
    if item_id > 100:
        return {"id": item_id, "big": True}
    return {"id": item_id}


@app.delete("/items/{item_id}")
def delete_item(item_id: int):
    return {"deleted": item_id}
"""


def make_project(root: Path) -> tuple[Path, Path]:
    src = root / "src"
    src.mkdir()
    (src / "maths.py").write_text(MATHS)
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_maths.py").write_text(TESTS)
    return src, tests


def test_percent_and_missing_lines_of_a_known_project(tmp_path: Path):
    src, tests = make_project(tmp_path)
    report = run_coverage(tests, src, load_plugins=False)
    # Run: def sign, if, return 1, def unused = 4 of 6; missing: return -1 (3), return 0 (8).
    assert (report.statements, report.covered) == (6, 4)
    assert report.percent == pytest.approx(66.67)
    [maths] = report.files
    assert maths.file == "maths.py"
    assert maths.missing_lines == [3, 8]
    assert report.tests_passed


def test_files_no_test_imports_count_as_uncovered(tmp_path: Path):
    src, tests = make_project(tmp_path)
    (src / "orphan.py").write_text("X = 1\nY = 2\n")
    report = run_coverage(tests, src, load_plugins=False)
    orphan = next(f for f in report.files if f.file == "orphan.py")
    assert (orphan.percent, orphan.missing_lines) == (0.0, [1, 2])


def test_failing_tests_are_reported_not_raised(tmp_path: Path):
    src, tests = make_project(tmp_path)
    (tests / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    report = run_coverage(tests, src, load_plugins=False)
    assert report.tests_exit_code == 1
    assert not report.tests_passed


def test_missing_source_is_named(tmp_path: Path):
    with pytest.raises(PathNotFound, match="no-such-src"):
        run_coverage(tmp_path, tmp_path / "no-such-src")


def test_server_under_coverage_measures_lines_hit_by_http_requests(tmp_path: Path):
    app_dir = tmp_path / "api"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(API)
    data_file = tmp_path / "server.coverage"
    with serve_under_coverage(app_dir, "main:app", data_file=data_file) as server:
        response = httpx.get(f"{server.base_url}/items/7")
        assert response.json() == {"id": 7}
        assert server.report is None
    report = server.report
    assert report is not None
    [main] = report.files
    # Not hit: the big-item branch (line 9) and the whole DELETE handler body (line 15).
    assert main.missing_lines == [9, 15]
    assert report.percent == pytest.approx(80.0)
    # The data file outlives the block and combines with further runs.
    assert data_file.exists()
    assert coverage_report([data_file], app_dir).percent == pytest.approx(80.0)


def test_two_server_runs_combine(tmp_path: Path):
    app_dir = tmp_path / "api"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(API)
    first, second = tmp_path / "a.coverage", tmp_path / "b.coverage"
    with serve_under_coverage(app_dir, "main", data_file=first) as server:
        httpx.get(f"{server.base_url}/items/500")
    with serve_under_coverage(app_dir, "main", data_file=second) as server:
        httpx.delete(f"{server.base_url}/items/1")
    combined = coverage_report([first, second], app_dir)
    assert combined.files[0].missing_lines == [10]


def test_cli_json_and_fail_under(tmp_path: Path):
    src, tests = make_project(tmp_path)
    app = typer.Typer()
    app.command()(coverage_command)
    args = ["--tests", str(tests), "--source", str(src), "--no-plugins"]
    ok = CliRunner().invoke(app, [*args, "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["files"][0]["missing_lines"] == [3, 8]
    low = CliRunner().invoke(app, [*args, "--fail-under", "70"])
    assert low.exit_code == 1
    assert "66.7%" in low.stdout
