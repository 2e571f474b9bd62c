"""The tdd-enforcer governor: the tests pass, cover enough, and came before the code.

In a checkout of the revision to check (``policy:`` in ``agents/manifests/tdd-enforcer.yaml``,
see :class:`TddPolicy`):

* **Tests.** ``python -m coverage run -m pytest`` runs the project's tests within
  ``test_timeout_s``. A failing test, a collection error, no tests at all or a
  timeout is a violation; the note lists the failing tests.

**Which Python.** By default the tests run with this agent's own interpreter
(``sys.executable``), which has coverage and pytest but *not the project's
dependencies*: a project that imports anything else fails at collection. The report
says so ("tests could not be collected: missing dependency `x`") rather than calling
it a failing test. Point the ``python`` policy field at an interpreter (a path, or a
name on ``PATH``) that has the project, pytest and coverage installed, e.g. a
virtualenv the deployment prepares.

**Isolation.** The tests are the merge request's code: untrusted. They run

* with a minimal environment (``PATH``, ``LANG``/``LC_ALL``, ``HOME`` and ``TMPDIR``
  set to fresh temporary directories, ``COVERAGE_FILE``, ``PYTHONDONTWRITEBYTECODE``)
  and nothing else, so none of the agent's secrets (``BAR_*``: the database URL,
  Kafka credentials, the GitLab token) nor its own ``PYTEST_*``/``COV_*`` settings
  reach them; and
* in a session of their own, so a timeout kills the whole process group, including
  any process the tests started, not only the direct child.

This is not a sandbox: the tests can still read files and reach the network the
agent can.
* **Coverage.** ``coverage json`` gives the percentage of statements covered in
  ``source`` (the checkout by default) minus ``omit`` (test files); below
  ``coverage_threshold`` (80) is a violation, and the note names the least covered
  files.
* **Red-green-refactor.** When there is a base to compare with (a merge request's
  target branch, a push's ``before``, a ``base`` parameter), the commits base..head
  are walked oldest first, merge commits skipped. Each commit that adds or changes a
  source module must find a test for it among the test files added or changed in
  that commit or an earlier one of the range. A test *is for* ``src/pkg/foo.py``
  when it is named ``test_foo.py`` or ``foo_test.py``, or when, at that commit, it
  imports the module (``import pkg.foo``, ``from pkg.foo import ...``,
  ``from pkg import foo``, or the same with a shorter dotted name, as tests that put
  ``src`` on the path write). Deleting code needs no test; ``ignore`` globs
  (``__init__.py``, ``conftest.py``, ``setup.py``, ``docs/``) are not source.

Globs are ``fnmatch`` patterns on the path from the repository root, where ``*``
also matches ``/``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from agents.governors.base import Governor, GovernorPolicy
from agents.governors.checkout import Workspace, workspace
from agents.governors.inputs import GovernorInput
from agents.governors.report import Report

__all__ = ["TddEnforcerAgent", "TddPolicy", "TestRun", "module_names"]

_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")
_SHOWN = 8  # failing tests, files and commits listed in a note


class TddPolicy(GovernorPolicy):
    """The ``policy:`` of the tdd-enforcer governor."""

    #: Least percentage of statements the tests must cover.
    coverage_threshold: float = Field(default=80.0, ge=0, le=100)
    #: What coverage measures (``coverage run --source``), relative to the checkout.
    source: tuple[str, ...] = Field(default=(".",), min_length=1)
    #: Files left out of the coverage percentage (``coverage run --omit``).
    omit: tuple[str, ...] = (
        "tests/*",
        "*/tests/*",
        "test_*.py",
        "*/test_*.py",
        "conftest.py",
        "*/conftest.py",
        "setup.py",
    )
    #: Extra arguments to pytest, e.g. ``["-x", "tests/unit"]``.
    pytest_args: tuple[str, ...] = ()
    #: Seconds the test run may take.
    test_timeout_s: float = Field(default=240.0, gt=0)
    #: Seconds ``coverage json`` may take to write the coverage report.
    coverage_timeout_s: float = Field(default=60.0, gt=0)
    #: The interpreter to run the tests with (a path or a name on ``PATH``); it needs
    #: pytest, coverage and the project's dependencies. ``None``: this agent's own.
    python: str | None = None
    #: Check that tests come before or with the code they test.
    red_green: bool = True
    #: Which changed files are tests.
    test_globs: tuple[str, ...] = (
        "tests/*",
        "*/tests/*",
        "test/*",
        "*/test/*",
        "test_*.py",
        "*/test_*.py",
        "*_test.py",
    )
    #: Which changed files are source modules that need a test.
    source_globs: tuple[str, ...] = ("*.py",)
    #: Changed files that are neither.
    ignore: tuple[str, ...] = (
        "*__init__.py",
        "conftest.py",
        "*/conftest.py",
        "setup.py",
        "noxfile.py",
        "docs/*",
    )


@dataclass
class TestRun:
    """What one test run under coverage gave."""

    __test__ = False  # not a pytest test class, despite its name

    exit_code: int | None  # None: timed out
    output: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    percent: float | None = None
    #: Why no coverage could be read, when the tests ran but ``coverage json`` failed.
    coverage_error: str | None = None
    #: (path, percent covered, missing statements) of each measured file.
    files: list[tuple[str, float, int]] = field(default_factory=list)


def _run(
    command: list[str], cwd: Path, env: dict[str, str], timeout_s: float
) -> tuple[int | None, str]:
    """Run ``command`` in a new session; its exit code (``None``: timed out, and the
    whole process group was killed) and its stdout and stderr."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        pass
    # The session's group: the child and whatever it started that stayed in it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        # A process that left the group still holds the pipe: stop waiting for it.
        proc.kill()
        out = ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()
    return None, out or ""


def _test_env(tmp: Path) -> dict[str, str]:
    """The environment of the test run: only what Python and the tests need.

    The tests are untrusted code from the merge request, so nothing of the agent's
    own environment reaches them but ``PATH`` and the locale: not its secrets
    (``BAR_*``), not its pytest and coverage settings. ``HOME`` and ``TMPDIR`` are
    fresh directories, removed afterwards, so the tests read no one's dotfiles.
    """
    home, temp = tmp / "home", tmp / "tmp"
    home.mkdir()
    temp.mkdir()
    locale = os.environ.get("LC_ALL") or os.environ.get("LANG") or "C.UTF-8"
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": str(home),
        "LANG": locale,
        "LC_ALL": locale,
        "TMPDIR": str(temp),
        "COVERAGE_FILE": str(tmp / ".coverage"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


_MISSING_MODULE = re.compile(r"No module named '?([\w.]+)'?")


def _matches(path: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def module_names(path: str) -> list[str]:
    """The dotted names a test may import ``path`` by, longest first:
    ``src/pkg/foo.py`` → ``["pkg.foo", "foo"]``."""
    parts = path.removesuffix(".py").split("/")
    if len(parts) > 1 and parts[0] in ("src", "lib"):
        parts = parts[1:]
    return [".".join(parts[i:]) for i in range(len(parts))]


def _imports(text: str, source: str) -> bool:
    """Whether test code ``text`` imports the module at path ``source``."""
    for dotted in module_names(source):
        parent, _, name = dotted.rpartition(".")
        name_re = re.escape(dotted)
        patterns = [rf"^\s*import\s+{name_re}\b", rf"^\s*from\s+{name_re}\s+import\b"]
        if parent:
            patterns.append(rf"^\s*from\s+{re.escape(parent)}\s+import\s+[^\n]*?\b{name}\b")
        if any(re.search(p, text, re.MULTILINE) for p in patterns):
            return True
    return False


class TddEnforcerAgent(Governor[TddPolicy]):
    """Runs the tests under coverage and checks the red-green-refactor order of commits."""

    manifest_file = "tdd-enforcer"
    violation_code = "governor.tdd_violation"
    policy_model = TddPolicy

    def check(self, inp: GovernorInput, policy: TddPolicy, report: Report) -> None:
        """Run the tests, then walk the commits."""
        with workspace(inp) as ws:
            report.sha = ws.head  # the commit actually checked
            run = self.run_tests(ws.path, policy)
            self._tests(run, policy, report)
            self._coverage(run, policy, report)
            if not policy.red_green:
                report.skip("red-green-refactor", "not checked: red_green is off in the policy")
            elif ws.base is None:
                report.skip("red-green-refactor", "no base revision to compare with")
            else:
                self._order(ws, policy, report)

    def run_tests(self, root: Path, policy: TddPolicy) -> TestRun:
        """Run pytest under coverage in ``root`` and read the results."""
        python = policy.python or sys.executable
        with tempfile.TemporaryDirectory(prefix="bar-coverage-") as tmp:
            env = _test_env(Path(tmp))
            command = [
                python, "-m", "coverage", "run",
                f"--source={','.join(policy.source)}",
                *([f"--omit={','.join(policy.omit)}"] if policy.omit else []),
                "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *policy.pytest_args,
            ]  # fmt: skip
            try:
                code, out = _run(command, root, env, policy.test_timeout_s)
            except OSError as exc:
                return TestRun(127, f"cannot run the interpreter `{python}`: {exc}")
            run = TestRun(code, out)
            if code is None:
                return run
            self._read_output(run)
            report_file = Path(tmp) / "coverage.json"
            json_command = [python, "-m", "coverage", "json", "-q", "-o", str(report_file)]
            converted, json_out = _run(json_command, root, env, policy.coverage_timeout_s)
            if converted is None:
                limit = policy.coverage_timeout_s
                run.coverage_error = f"`coverage json` ran longer than {limit:g}s"
            elif converted == 0 and report_file.is_file():
                data = json.loads(report_file.read_text())
                run.percent = float(data["totals"]["percent_covered"])
                run.files = sorted(
                    (
                        (name, float(f["summary"]["percent_covered"]),
                         int(f["summary"]["missing_lines"]))
                        for name, f in data.get("files", {}).items()
                    ),
                    key=lambda item: (item[1], -item[2]),
                )  # fmt: skip
            elif run.counts.get("passed") or run.counts.get("failed"):
                tail = " / ".join(json_out.strip().splitlines()[-2:]) or "no message"
                run.coverage_error = f"`coverage json` exited with {converted}: {tail}"
        return run

    @staticmethod
    def _read_output(run: TestRun) -> None:
        lines = run.output.splitlines()
        for line in reversed(lines):
            counts = _SUMMARY_COUNT.findall(line)
            if counts and " in " in line:
                for number, word in counts:
                    key = "errors" if word.startswith("error") else word
                    run.counts[key] = run.counts.get(key, 0) + int(number)
                break
        run.failures = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]

    def _tests(self, run: TestRun, policy: TddPolicy, report: Report) -> None:
        passed, failed = run.counts.get("passed", 0), run.counts.get("failed", 0)
        errors = run.counts.get("errors", 0)
        report.metrics.update(tests_passed=float(passed), tests_failed=float(failed + errors))
        rule = "tests"
        if run.exit_code is None:
            report.add(
                rule,
                False,
                f"the tests ran longer than {policy.test_timeout_s:g}s",
                "make the test suite faster or raise `test_timeout_s` in the policy.",
            )
        elif run.exit_code == 0:
            report.add(rule, True, f"{passed} passed")
        elif run.exit_code == 5:
            report.add(
                rule,
                False,
                "no tests were collected",
                "add tests (`tests/test_<module>.py` with `test_...` functions).",
            )
        elif missing := self._missing_module(run):
            python = policy.python or "this agent's interpreter"
            if missing.split(".")[0] in ("coverage", "pytest"):
                report.add(
                    rule,
                    False,
                    f"the tests could not be run: `{missing}` is not installed in {python}",
                    "install pytest and coverage in the interpreter the `python` policy "
                    "field names.",
                )
            else:
                report.add(
                    rule,
                    False,
                    f"the tests could not be collected (missing dependency `{missing}`): "
                    "this is not a failing test",
                    f"the tests run with {python}, which lacks the project's dependencies: "
                    "set `python` in the tdd-enforcer policy to an interpreter that has "
                    "them (and pytest and coverage), or make the import optional.",
                )
        elif run.exit_code == 1 and run.failures:
            shown = "; ".join(f"`{line}`" for line in run.failures[:_SHOWN])
            more = f" and {len(run.failures) - _SHOWN} more" if len(run.failures) > _SHOWN else ""
            report.add(
                rule,
                False,
                f"{failed + errors} failed, {passed} passed: {shown}{more}",
                "make the failing tests pass; run them with `python -m pytest -q`.",
            )
        else:
            tail = " / ".join(run.output.strip().splitlines()[-3:])
            report.add(
                rule,
                False,
                f"pytest exited with {run.exit_code}: {tail}",
                "run `python -m pytest -q` in a fresh checkout and fix what stops it.",
            )

    @staticmethod
    def _missing_module(run: TestRun) -> str | None:
        """The module a test run stopped on for lack of it, if that is what happened:
        pytest's collection errors (exit 2, or 4 from a conftest) or an interpreter
        without pytest or coverage (exit 1, no test run)."""
        collecting = run.exit_code in (2, 4) or (run.exit_code == 1 and not run.counts)
        match = _MISSING_MODULE.search(run.output) if collecting else None
        return match.group(1) if match else None

    def _coverage(self, run: TestRun, policy: TddPolicy, report: Report) -> None:
        rule = "coverage"
        threshold = policy.coverage_threshold
        if run.coverage_error is not None:
            report.add(
                rule,
                False,
                f"the coverage report could not be read: {run.coverage_error}",
                "run `python -m coverage json` after the tests to see why, or raise "
                "`coverage_timeout_s` in the policy.",
            )
            return
        if run.percent is None:
            report.add(
                rule,
                False,
                "no coverage was measured (no test ran)",
                "add tests that exercise the code.",
            )
            return
        report.metrics["coverage_percent"] = round(run.percent, 2)
        if run.percent >= threshold:
            report.add(rule, True, f"{run.percent:.1f}% ≥ {threshold:g}%")
            return
        least = ", ".join(
            f"`{name}` {pct:.0f}% ({missing} lines missed)"
            for name, pct, missing in run.files[:_SHOWN]
            if pct < 100
        )
        report.add(
            rule,
            False,
            f"{run.percent:.1f}% of statements covered, below {threshold:g}%",
            f"add tests for the least covered files: {least}.",
        )

    def _order(self, ws: Workspace, policy: TddPolicy, report: Report) -> None:
        rule = "red-green-refactor"
        commits = ws.commits(ws.base)
        report.metrics["commits_checked"] = float(len(commits))
        tests: list[str] = []
        texts: dict[tuple[str, str], str | None] = {}  # (sha, test path) -> its text
        bad = 0
        for commit in commits:
            changes = [(s, p) for s, p in ws.changes(commit.sha) if not _matches(p, policy.ignore)]
            for status, path in changes:
                if status != "D" and _matches(path, policy.test_globs) and path not in tests:
                    tests.append(path)
            for status, path in changes:
                if status == "D" or _matches(path, policy.test_globs):
                    continue
                if not _matches(path, policy.source_globs):
                    continue
                if any(_covers(ws, commit.sha, test, path, texts) for test in tests):
                    continue
                bad += 1
                stem = path.rsplit("/", 1)[-1].removesuffix(".py")
                report.add(
                    rule,
                    False,
                    f"commit {commit.short} `{commit.subject}` changes `{path}` with no test "
                    "for it in that commit or an earlier one",
                    f"write the test first: add or change `tests/test_{stem}.py` (or a test "
                    f"that imports `{module_names(path)[0]}`) in that commit or before it, "
                    "e.g. by reordering with `git rebase -i`.",
                )
        if not bad:
            report.add(
                rule,
                True,
                f"{len(commits)} commit(s): every code change came with or after a test for it",
            )


def _covers(
    ws: Workspace, sha: str, test: str, source: str, texts: dict[tuple[str, str], str | None]
) -> bool:
    """Whether ``test`` is a test for ``source``: by its name, or by importing it at ``sha``."""
    stem = source.rsplit("/", 1)[-1].removesuffix(".py")
    if test.rsplit("/", 1)[-1] in (f"test_{stem}.py", f"{stem}_test.py"):
        return True
    if (sha, test) not in texts:
        texts[sha, test] = ws.show(sha, test)
    text = texts[sha, test]
    return text is not None and _imports(text, source)
