"""tdd-enforcer: tests pass under coverage, meet the threshold, and come before the code."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agents.governors import TddEnforcerAgent
from agents.governors.tdd_enforcer import module_names
from buildkit.contracts.events import ActionKind, TaskStatus
from tests.agents.governors.repos import Repo, merge_request_event, run, workflow_parameters

CALC = "def add(a, b):\n    return a + b\n"
CALC_MORE = CALC + "\n\ndef sub(a, b):\n    return a - b\n"
CALC_TEST = (
    "import sys, pathlib\n"
    "sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / 'src'))\n"
    "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
)
SUB_TEST = "from calc import sub\n\n\ndef test_sub():\n    assert sub(3, 1) == 2\n"
CONFTEST = "import sys, pathlib\nsys.path.insert(0, str(pathlib.Path(__file__).parent / 'src'))\n"


@pytest.fixture
def agent() -> TddEnforcerAgent:
    return TddEnforcerAgent()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """main: src/calc.py with add() and its test; on branch feature/5-sub."""
    repo = Repo(tmp_path / "origin")
    repo.commit(
        "feat: add",
        {"conftest.py": CONFTEST, "src/calc.py": CALC, "tests/test_calc.py": CALC_TEST},
    )
    repo.switch("feature/5-sub", create=True)
    return repo


def check_mr(agent, repo: Repo, **extra):
    event = merge_request_event(repo, source="feature/5-sub", head=repo.head(), title="Sub #5")
    return run(agent, workflow_parameters(event, **extra))


def checks(result) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for check in json.loads(result.outputs["report"])["checks"]:
        found.setdefault(check["rule"], []).append(check["status"])
    return found


def message(result) -> str:
    assert result.error is not None, "expected a violation"
    assert result.error.code == "governor.tdd_violation"
    return result.error.message


def test_tests_first_then_code_with_full_coverage_passes(agent, repo):
    repo.commit("test: sub", {"tests/test_calc.py": CALC_TEST + "\n\n" + SUB_TEST})
    head = repo.commit("feat: sub", {"src/calc.py": CALC_MORE})

    result, ctx = check_mr(agent, repo)

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics == {
        "tests_passed": 2.0,
        "tests_failed": 0.0,
        "coverage_percent": 100.0,
        "commits_checked": 2.0,
        "violations": 0.0,
    }
    assert checks(result) == {
        "tests": ["passed"],
        "coverage": ["passed"],
        "red-green-refactor": ["passed"],
    }
    [status, note] = ctx.actions
    assert (status.sha, status.state, status.title) == (head, "success", "bar/tdd-enforcer")
    assert note.kind is ActionKind.MERGE_REQUEST_NOTE
    assert "100.0% ≥ 80%" in note.body


def test_code_before_its_test_breaks_red_green_naming_commit_and_file(agent, repo):
    code = repo.commit("feat: sub", {"src/calc.py": CALC_MORE})
    repo.commit("test: sub", {"tests/test_calc.py": CALC_TEST + "\n\n" + SUB_TEST})

    result, ctx = check_mr(agent, repo)

    text = message(result)
    assert text.startswith("1 violation(s): red-green-refactor: ")
    assert f"commit {code[:8]} `feat: sub` changes `src/calc.py` with no test" in text
    assert (
        "add or change `tests/test_calc.py` (or a test that imports `calc`)" in ctx.actions[1].body
    )
    # The tests themselves pass and cover everything: only the order is wrong.
    assert ctx.actions[0].state == "failed"


def test_a_test_that_imports_the_module_counts_whatever_its_name(agent, repo):
    repo.commit("test: sub via import", {"tests/test_arith.py": SUB_TEST})
    repo.commit("feat: sub", {"src/calc.py": CALC_MORE})

    result, _ = check_mr(agent, repo)

    assert result.status is TaskStatus.SUCCEEDED, result.error


def test_failing_tests_are_a_violation_listing_them(agent, repo):
    failing = SUB_TEST.replace("== 2", "== 5")
    repo.commit("feat: sub with test", {"src/calc.py": CALC_MORE, "tests/test_sub.py": failing})

    result, ctx = check_mr(agent, repo)

    text = message(result)
    assert "tests: 1 failed, 1 passed: `FAILED tests/test_sub.py::test_sub" in text
    assert "make the failing tests pass" in ctx.actions[1].body


def test_coverage_below_threshold_is_a_violation_unless_the_policy_lowers_it(agent, repo):
    # sub() and mul() come with a test file for the order rule, but nothing calls them.
    untested = CALC_MORE + "\n\ndef mul(a, b):\n    return a * b\n"
    repo.commit("feat: more", {"src/calc.py": untested, "tests/test_calc.py": CALC_TEST + "\n"})

    strict, ctx = check_mr(agent, repo)
    lenient, _ = check_mr(agent, repo, policy={"coverage_threshold": 50})

    text = message(strict)
    assert "coverage: 66.7% of statements covered, below 80%" in text
    assert "`src/calc.py` 67% (2 lines missed)" in ctx.actions[1].body
    assert lenient.status is TaskStatus.SUCCEEDED, lenient.error
    assert lenient.metrics["coverage_percent"] == pytest.approx(66.67)


def test_a_checkout_without_tests_is_a_violation(agent, tmp_path):
    repo = Repo(tmp_path / "bare")
    repo.commit("feat: code only", {"app.py": "x = 1\n"})

    result, _ = run(agent, {"checkout": str(repo.path)})

    text = message(result)
    assert "tests: no tests were collected" in text
    # Coverage still measures the source no test ran: none of it is covered.
    assert "coverage: 0.0% of statements covered, below 80%" in text
    # No base given: the order is not checked, and the report says why.
    assert "red-green-refactor" not in text


def test_invalid_threshold_in_the_task_policy_is_bad_policy(agent, repo):
    result, _ = check_mr(agent, repo, policy={"coverage_threshold": 180})

    assert result.error is not None
    assert result.error.code == "governor.bad_policy"
    assert 'field "policy.coverage_threshold"' in result.error.message


def test_module_names_drop_src_and_offer_shorter_dotted_names():
    assert module_names("src/pkg/util.py") == ["pkg.util", "util"]
    assert module_names("app.py") == ["app"]


# -- running untrusted tests -----------------------------------------------------------

APP = "def one():\n    return 1\n"


def app_repo(tmp_path: Path, test: str) -> Repo:
    repo = Repo(tmp_path / "app")
    repo.commit("feat: one", {"app.py": APP, "test_app.py": test})
    return repo


def test_the_tests_see_none_of_the_agents_secrets(agent, tmp_path):
    test = (
        "import os\nfrom app import one\n\n\ndef test_env():\n"
        "    assert one() == 1\n"
        "    assert [k for k in os.environ if k.startswith('BAR_')] == []\n"
        f"    assert os.environ['HOME'] != {str(Path.home())!r}\n"
        "    assert os.path.isdir(os.environ['TMPDIR'])\n"
    )
    repo = app_repo(tmp_path, test)
    saved = os.environ.get("BAR_GITLAB_TOKEN")
    os.environ["BAR_GITLAB_TOKEN"] = "glpat-secret"
    try:
        result, _ = run(agent, {"checkout": str(repo.path)})
    finally:
        if saved is None:
            del os.environ["BAR_GITLAB_TOKEN"]
        else:
            os.environ["BAR_GITLAB_TOKEN"] = saved

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert checks(result)["tests"] == ["passed"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Killed but not yet reaped by whoever adopted it: gone all the same.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_a_timeout_kills_the_processes_the_tests_started(agent, tmp_path):
    pid_file = tmp_path / "child.pid"
    test = (
        "import subprocess, sys, time\n\n\ndef test_hangs():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "    time.sleep(300)\n"
    )
    repo = app_repo(tmp_path, test)

    result, _ = run(agent, {"checkout": str(repo.path), "policy": {"test_timeout_s": 6}})

    assert "tests: the tests ran longer than 6s" in message(result)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"process {pid} the tests started outlived the timeout"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # do not leave it behind should the assert fail


def test_a_coverage_report_that_times_out_is_reported_not_raised(agent, tmp_path):
    repo = app_repo(tmp_path, "from app import one\n\n\ndef test_one():\n    assert one() == 1\n")

    result, _ = run(agent, {"checkout": str(repo.path), "policy": {"coverage_timeout_s": 0.001}})

    text = message(result)
    assert text.startswith(
        "1 violation(s): coverage: the coverage report could not be read: `coverage json` "
        "ran longer than 0.001s"
    )


def test_a_missing_dependency_is_reported_as_uncollectable_not_as_failing(agent, tmp_path):
    test = "import not_installed_dep_xyz\n\n\ndef test_one():\n    assert True\n"
    repo = app_repo(tmp_path, test)

    result, _ = run(agent, {"checkout": str(repo.path)})

    text = message(result)
    assert (
        "tests: the tests could not be collected (missing dependency `not_installed_dep_xyz`)"
        in text
    )
    assert "failed" not in text.split("; coverage")[0]


def test_the_python_policy_picks_the_interpreter(agent, tmp_path):
    repo = app_repo(tmp_path, "from app import one\n\n\ndef test_one():\n    assert one() == 1\n")

    ours, _ = run(agent, {"checkout": str(repo.path), "policy": {"python": sys.executable}})
    missing, _ = run(agent, {"checkout": str(repo.path), "policy": {"python": "/nonexistent/py"}})

    assert ours.status is TaskStatus.SUCCEEDED, ours.error
    assert "cannot run the interpreter `/nonexistent/py`" in message(missing)
