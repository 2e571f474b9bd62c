"""Mutation testing: how many small, deliberate bugs do the tests catch?

``run_mutation_test(src, tests)`` copies the sources and the tests into a
temporary working copy (the user's files are never touched), checks that the
tests pass there unmutated (the *baseline*), then applies one mutant at a time,
runs pytest on the copy and records whether the tests failed (killed), passed
(survived) or ran past the per-mutant timeout. The score is
``(killed + timeout) / (killed + timeout + survived) * 100``; mutants the engine
could not apply count as errors and are left out of the score.

Engine: cosmic-ray 8, chosen over mutmut 3 because

* its operators are named and selectable one by one, which maps directly onto
  the document's ``operators: ['arithmetic', 'conditional', 'logical']``
  (``ReplaceBinaryOperator_*``, ``ReplaceComparisonOperator_*``,
  ``ReplaceAndWithOr`` and friends); mutmut 3 applies its whole fixed set of
  mutators (strings, numbers, arguments, names …) with no per-operator switch;
* it mutates any ``.py`` file given by path, so a ``--src`` outside the current
  project works; mutmut 3 reads its settings from ``setup.cfg``/``pyproject.toml``
  in the cwd and builds a ``mutants/`` tree there, i.e. it must run inside the
  project it mutates;
* each mutant is a plain source rewrite tested by a subprocess, so a separate
  tests directory, per-mutant timeouts and the diff of each mutant come for
  free, while mutmut's trampolines run pytest in forked workers of its own.

We use cosmic-ray as a library — its operator catalogue, the positions where an
operator applies and ``mutate_code`` — and run pytest ourselves, so the test
subprocess gets the working copy as cwd and ``PYTHONPATH`` (cosmic-ray's own
runner inherits the caller's cwd) and timeouts are told apart from failures.

Selecting, sampling and hooks (what an adapter such as ``agents.qits.mutants``
needs):

* ``files`` — shell-style globs matched (:func:`fnmatch.fnmatchcase`) against each
  source file's POSIX path relative to ``src``; only matching files are mutated.
  ``*`` also matches ``/``: ``"app.py"`` is the top-level file only, ``"*.py"`` is
  every file.
* ``max_mutants`` — at most this many of the planned mutants are run, chosen by
  :func:`sample_evenly` (spread evenly over the plan, the same ones on every run).
  The report's ``planned`` and ``sampled`` say how many the plan had and how many
  were picked (``sampled == total`` once completed).
* ``pytest_args`` / ``extra_env`` — added to every pytest run, the baseline
  included; an ``extra_env`` value of None removes that variable.
* ``prepare_copy`` — called once on each :class:`WorkingCopy` after the sources and
  tests are copied, before the baseline; it may write files anywhere under
  ``copy.root``. ``copy.root`` is pytest's cwd and on ``PYTHONPATH`` (after the
  sources), so a module written there is importable, e.g. as a plugin with
  ``pytest_args=["-p", "name"]``.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from qits.errors import PathNotFound, QualityToolError

OperatorGroup = Literal["arithmetic", "conditional", "logical"]
Outcome = Literal["killed", "survived", "timeout", "error"]
ALL_GROUPS: tuple[OperatorGroup, ...] = ("arithmetic", "conditional", "logical")

_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "FloorDiv", "Mod", "Pow")
_T = TypeVar("_T")
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache"}


def operator_group(name: str) -> OperatorGroup | None:
    """The document's operator group of a cosmic-ray operator name, or None if it has none.

    arithmetic: ``+ - * / // % **`` swapped among themselves and unary ``+``/``-`` swapped
    (the bitwise and shift replacements cosmic-ray also offers are left out);
    conditional: every comparison replacement (``== != < <= > >= is is not``);
    logical: ``and``↔``or``, adding or removing ``not``, ``True``↔``False``.
    """
    short = name.split("/", 1)[-1]
    if short.startswith("ReplaceBinaryOperator_"):
        _, src, dst = short.split("_")
        return "arithmetic" if src in _ARITHMETIC and dst in _ARITHMETIC else None
    if short in ("ReplaceUnaryOperator_USub_UAdd", "ReplaceUnaryOperator_UAdd_USub"):
        return "arithmetic"
    if short.startswith("ReplaceComparisonOperator_"):
        return "conditional"
    if short in (
        "ReplaceAndWithOr",
        "ReplaceOrWithAnd",
        "AddNot",
        "ReplaceUnaryOperator_Delete_Not",
        "ReplaceTrueWithFalse",
        "ReplaceFalseWithTrue",
    ):
        return "logical"
    return None


class Mutant(BaseModel):
    """One mutant: where it is, what changed and how the tests took it."""

    file: str = Field(description="path relative to the --src directory")
    line: int
    operator: str = Field(
        description="cosmic-ray operator, e.g. core/ReplaceBinaryOperator_Add_Sub"
    )
    group: OperatorGroup
    change: str = Field(description='the mutated line, "a + b → a - b"')
    diff: str = Field(description="unified diff of the mutated file")
    outcome: Outcome


class MutationReport(BaseModel):
    """The result of a mutation run; ``score`` is None when no score could be computed."""

    status: Literal["completed", "baseline_failed", "no_mutants"]
    score: float | None = Field(description="(killed + timeout) / (total - errors) * 100")
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    errors: int = 0
    total: int = Field(default=0, description="mutants run")
    planned: int = Field(
        default=0, description="mutants the operators give in the selected files, before sampling"
    )
    sampled: int = Field(
        default=0, description="mutants picked to run: all planned, or max_mutants of them"
    )
    survivors: list[Mutant] = Field(default_factory=list)
    errored: list[Mutant] = Field(default_factory=list)
    operators: list[OperatorGroup]
    src: str
    tests: str
    baseline_output: str | None = Field(
        default=None, description="tail of the pytest output when the baseline failed"
    )
    duration_s: float = 0.0

    @property
    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.status == "baseline_failed":
            return f"baseline failed: the tests in {self.tests} fail before any mutation"
        if self.status == "no_mutants":
            groups = ", ".join(self.operators)
            return f"no mutants: {self.src} has nothing the {groups} operators change"
        return (
            f"mutation score {self.score:.1f}% — {self.killed} killed, {self.timeout} timed out, "
            f"{self.survived} survived, {self.errors} errors of {self.total}"
        )


ProgressCallback = Callable[[Mutant, int, int], None]
"""Called after each mutant with (mutant, done, total)."""


@dataclass(frozen=True)
class _Planned:
    rel_path: Path
    operator: str
    group: OperatorGroup
    occurrence: int
    line: int


@dataclass(frozen=True)
class WorkingCopy:
    """One working copy: where the copied sources and tests live, and how pytest finds them.

    ``root`` is pytest's cwd and rootdir; ``src`` is the copied ``src`` (a directory, or
    the file inside its copied folder); ``tests`` the copied tests directory;
    ``pythonpath`` goes in front of ``PYTHONPATH``: the copied package's parent (or the
    copied folder itself when it is a plain folder of modules), then ``root``.
    """

    root: Path
    src: Path
    tests: Path
    pythonpath: tuple[Path, ...]


PrepareCopy = Callable[[WorkingCopy], None]
"""Called once on each working copy before any pytest run there (see the module docstring)."""


def _python_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(
        p
        for p in src.rglob("*.py")
        if not _SKIP_DIRS.intersection(p.relative_to(src).parts)
        and not p.name.startswith("test_")
        and not p.name.endswith("_test.py")
        and p.name != "conftest.py"
    )


def _operator_names(groups: Sequence[OperatorGroup]) -> list[tuple[str, OperatorGroup]]:
    from cosmic_ray.plugins import operator_names

    chosen = []
    for name in operator_names():
        group = operator_group(name)
        if group is not None and group in groups:
            chosen.append((name, group))
    return chosen


def plan_mutants(
    src: Path,
    groups: Sequence[OperatorGroup] = ALL_GROUPS,
    *,
    files: Sequence[str] | None = None,
) -> list[_Planned]:
    """Every (file, operator, occurrence) the chosen operator groups can mutate under ``src``.

    ``files``: only source files whose POSIX path relative to ``src`` (to its folder when
    ``src`` is a file) matches one of these globs (:func:`fnmatch.fnmatchcase`); all by
    default.
    """
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.plugins import get_operator

    base = src if src.is_dir() else src.parent
    operators = [(name, group, get_operator(name)()) for name, group in _operator_names(groups)]
    planned: list[_Planned] = []
    for path in _python_files(src):
        rel = path.relative_to(base).as_posix()
        if files is not None and not any(fnmatch.fnmatchcase(rel, g) for g in files):
            continue
        tree = get_ast(path.read_text(encoding="utf-8"))
        nodes = list(ast_nodes(tree))
        for name, group, operator in operators:
            occurrence = 0
            for node in nodes:
                for start_pos, _end in operator.mutation_positions(node):
                    planned.append(
                        _Planned(path.relative_to(base), name, group, occurrence, start_pos[0])
                    )
                    occurrence += 1
    return planned


def sample_evenly(items: Sequence[_T], limit: int | None) -> list[_T]:
    """At most ``limit`` of ``items`` (all when None), evenly spread from the first one on,
    always the same ones for the same input."""
    if limit is None or len(items) <= limit:
        return list(items)
    if limit <= 0:
        return []
    return [items[i * len(items) // limit] for i in range(limit)]


def _make_copy(src: Path, tests: Path, root: Path) -> WorkingCopy:
    """Copy src and tests under ``root``; sources on PYTHONPATH the way an install would."""
    src_home, tests_home = root / "src", root / "tests_root"
    ignore = shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc")
    # A single file is copied with its folder, so its package (and siblings) still import.
    folder = src if src.is_dir() else src.parent
    shutil.copytree(folder, src_home / folder.name, ignore=ignore)
    copied_src = src_home / folder.name if src.is_dir() else src_home / folder.name / src.name
    shutil.copytree(tests, tests_home / tests.name, ignore=ignore)
    # A package (has __init__.py) is imported by its name, so its parent goes on the path;
    # a plain folder of modules is itself the import root.
    is_package = (folder / "__init__.py").exists()
    path_entry = src_home if is_package else src_home / folder.name
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    # root last: a module prepare_copy writes there imports even under PYTHONSAFEPATH.
    return WorkingCopy(root, copied_src, tests_home / tests.name, (path_entry, root))


@dataclass(frozen=True)
class _Runner:
    python: str
    extra_args: tuple[str, ...]
    load_plugins: bool
    extra_env: tuple[tuple[str, str | None], ...] = ()


def _run_pytest(
    layout: WorkingCopy, timeout_s: float | None, runner: _Runner
) -> tuple[int | None, str]:
    """Run pytest on the copy; returns (exit code or None on timeout, output)."""
    env = dict(os.environ)
    for name, value in runner.extra_env:
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    if not runner.load_plugins:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # ~1 s less per run with many plugins
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant written within the same second must recompile
    env["PYTHONPATH"] = os.pathsep.join(
        [*(str(p) for p in layout.pythonpath), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env.pop("COVERAGE_PROCESS_START", None)
    cmd = [
        runner.python,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        str(layout.root / "pytest.ini"),
        "--rootdir",
        str(layout.root),
        *runner.extra_args,
        str(layout.tests),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=layout.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a timeout kills the whole group, not just pytest
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            proc.kill()
        proc.communicate()
        return None, "timeout"
    return proc.returncode, out.decode("utf-8", errors="replace")


def _change(original: str, mutated: str, line: int) -> str:
    before = original.splitlines()
    after = mutated.splitlines()
    if 0 < line <= min(len(before), len(after)):
        return f"{before[line - 1].strip()} → {after[line - 1].strip()}"
    return "(see diff)"


def _run_one(planned: _Planned, layout: WorkingCopy, timeout_s: float, runner: _Runner) -> Mutant:
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    target = layout.src / planned.rel_path if layout.src.is_dir() else layout.src
    original = target.read_text(encoding="utf-8")
    rel = planned.rel_path.as_posix()

    def mutant(outcome: Outcome, change: str, diff: str) -> Mutant:
        return Mutant(
            file=rel,
            line=planned.line,
            operator=planned.operator,
            group=planned.group,
            change=change,
            diff=diff,
            outcome=outcome,
        )

    try:
        mutated = mutate_code(original, get_operator(planned.operator)(), planned.occurrence)
    except Exception as exc:  # cosmic-ray may fail on exotic syntax; count, don't crash the run
        return mutant("error", f"mutation failed: {exc}", "")
    if mutated is None:
        return mutant("error", "operator did not apply", "")
    diff = "\n".join(
        difflib.unified_diff(
            original.splitlines(), mutated.splitlines(), f"a/{rel}", f"b/{rel}", lineterm=""
        )
    )
    change = _change(original, mutated, planned.line)
    try:
        target.write_text(mutated, encoding="utf-8")
        code, _out = _run_pytest(layout, timeout_s, runner)
    finally:
        target.write_text(original, encoding="utf-8")
    if code is None:
        return mutant("timeout", change, diff)
    if code == 0:
        return mutant("survived", change, diff)
    # 1: a test failed; 2: collection failed (the mutant broke an import) — both detect it.
    if code in (1, 2):
        return mutant("killed", change, diff)
    return mutant("error", f"{change} (pytest exit code {code})", diff)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_mutation_test(
    src: Path | str,
    tests: Path | str,
    *,
    operators: Sequence[OperatorGroup] = ALL_GROUPS,
    timeout_s: float | None = None,
    workers: int = 1,
    python: str | None = None,
    pytest_args: Sequence[str] = (),
    load_plugins: bool = True,
    on_progress: ProgressCallback | None = None,
    files: Sequence[str] | None = None,
    max_mutants: int | None = None,
    extra_env: Mapping[str, str | None] | None = None,
    prepare_copy: PrepareCopy | None = None,
    baseline_timeout_s: float | None = None,
) -> MutationReport:
    """Mutate ``src`` with the chosen operator groups and run the ``tests`` against each mutant.

    ``timeout_s`` bounds one mutant's test run; by default it is four times the
    baseline run plus five seconds. ``workers`` > 1 runs mutants in parallel,
    each worker in a working copy of its own. ``python`` is the interpreter
    with pytest installed (this one by default); ``pytest_args`` are added to
    every pytest run; ``load_plugins=False`` sets ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``,
    much faster when the tests need no plugin. ``on_progress`` is called after
    each mutant.

    ``files`` (globs relative to ``src``) limits the files mutated, ``max_mutants``
    (≥ 1, all by default) the mutants run, sampled with :func:`sample_evenly`;
    ``extra_env`` is set in every pytest run's environment (None removes a variable);
    ``prepare_copy`` is called on each working copy before the baseline (see the
    module docstring). ``baseline_timeout_s`` bounds the unmutated run (unbounded by
    default); running past it reports ``baseline_failed``.
    """
    src, tests = Path(src).resolve(), Path(tests).resolve()
    if not src.exists():
        raise PathNotFound("source path", src)
    if not tests.is_dir():
        raise PathNotFound("tests directory", tests)
    if not operators:
        raise QualityToolError(
            "no mutation operators chosen — use arithmetic, conditional, logical"
        )
    if max_mutants is not None and max_mutants < 1:
        raise QualityToolError(
            f"max_mutants must be at least 1 (or None for all), not {max_mutants}"
        )
    runner = _Runner(
        python or sys.executable,
        tuple(pytest_args),
        load_plugins,
        tuple((extra_env or {}).items()),
    )
    groups = list(dict.fromkeys(operators))
    started = time.monotonic()

    def report(**fields: object) -> MutationReport:
        return MutationReport.model_validate(
            {
                "operators": groups,
                "src": str(src),
                "tests": str(tests),
                "duration_s": round(time.monotonic() - started, 2),
                **fields,
            }
        )

    with tempfile.TemporaryDirectory(prefix="qits-mutation-") as tmp:
        layouts = [_make_copy(src, tests, Path(tmp) / f"w{i}") for i in range(max(1, workers))]
        if prepare_copy is not None:
            for layout in layouts:
                prepare_copy(layout)
        t0 = time.monotonic()
        code, out = _run_pytest(layouts[0], baseline_timeout_s, runner)
        baseline_s = time.monotonic() - t0
        if code is None:
            out = f"the unmutated test run took longer than {baseline_timeout_s} s"
        if code != 0:
            return report(status="baseline_failed", score=None, baseline_output=_tail(out))
        planned = plan_mutants(src, groups, files=files)
        if not planned:
            return report(status="no_mutants", score=None)
        chosen = sample_evenly(planned, max_mutants)
        limit = timeout_s if timeout_s is not None else baseline_s * 4 + 5
        results = list(_execute(chosen, layouts, limit, runner, on_progress))

    counts = {
        o: sum(1 for m in results if m.outcome == o)
        for o in ("killed", "survived", "timeout", "error")
    }
    scored = counts["killed"] + counts["timeout"] + counts["survived"]
    score = (counts["killed"] + counts["timeout"]) * 100 / scored if scored else None
    return report(
        status="completed",
        score=None if score is None else round(score, 2),
        killed=counts["killed"],
        survived=counts["survived"],
        timeout=counts["timeout"],
        errors=counts["error"],
        total=len(results),
        planned=len(planned),
        sampled=len(chosen),
        survivors=[m for m in results if m.outcome == "survived"],
        errored=[m for m in results if m.outcome == "error"],
    )


def _execute(
    planned: list[_Planned],
    layouts: list[WorkingCopy],
    timeout_s: float,
    runner: _Runner,
    on_progress: ProgressCallback | None,
) -> Iterator[Mutant]:
    free: Queue[WorkingCopy] = Queue()
    for layout in layouts:
        free.put(layout)

    def work(item: _Planned) -> Mutant:
        layout = free.get()
        try:
            return _run_one(item, layout, timeout_s, runner)
        finally:
            free.put(layout)

    with ThreadPoolExecutor(max_workers=len(layouts)) as pool:
        for done, result in enumerate(pool.map(work, planned), start=1):
            if on_progress is not None:
                on_progress(result, done, len(planned))
            yield result
