"""The quality commands: ``buildkit qits mutation-test | security-scan | coverage | evaluate-gate``.

Plain Typer command functions, mounted by the ``qits`` command group. Each
prints a rich table, or with ``--json`` the report model as JSON on stdout (so
one command's output feeds ``evaluate-gate --*-report``); each exits 1 when its
check fails and prints a BuildKitError as one red line.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from buildkit.cli.common import console, handle_errors, out
from qits.errors import PathNotFound, QualityToolError

if TYPE_CHECKING:
    from qits.security import Severity


class OperatorChoice(StrEnum):
    """The document's mutation operator groups."""

    arithmetic = "arithmetic"
    conditional = "conditional"
    logical = "logical"


class SeverityChoice(StrEnum):
    """Finding severities, lowest first."""

    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class FailOnChoice(StrEnum):
    """The severity from which findings fail the scan; ``none`` never fails it."""

    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"
    none = "none"


_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}
JsonOption = Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")]


def _print_json(model: object) -> None:
    typer.echo(model.model_dump_json(indent=2))  # type: ignore[attr-defined]


@handle_errors
def mutation_test_command(
    src: Annotated[Path, typer.Option("--src", help="source directory (or file) to mutate")],
    tests: Annotated[Path, typer.Option("--tests", help="tests directory, run with pytest")],
    operators: Annotated[
        list[OperatorChoice] | None,
        typer.Option("--operator", "-o", help="operator group; repeat for several (default all)"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="seconds per mutant's test run (default 4 x the baseline + 5 s)"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="mutants tested in parallel, one working copy each")
    ] = min(4, os.cpu_count() or 1),
    plugins: Annotated[
        bool, typer.Option(help="let pytest autoload its plugins (--no-plugins is faster)")
    ] = True,
    fail_under: Annotated[
        float | None, typer.Option(help="exit 1 when the mutation score is below this percent")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Mutation testing with cosmic-ray operators; reports the score and every surviving mutant."""
    from qits.mutation import ALL_GROUPS, MutationReport, run_mutation_test

    groups = [o.value for o in operators] if operators else list(ALL_GROUPS)
    with Progress(
        TextColumn("mutants"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("mutants", total=None, last="baseline…")

        def on_progress(mutant: object, done: int, total: int) -> None:
            outcome = getattr(mutant, "outcome", "")
            progress.update(task, completed=done, total=total, last=outcome)

        report: MutationReport = run_mutation_test(
            src,
            tests,
            operators=groups,  # type: ignore[arg-type]
            timeout_s=timeout,
            workers=workers,
            load_plugins=plugins,
            on_progress=on_progress,
        )
    if json_output:
        _print_json(report)
    else:
        _print_mutation(report)
    if report.status == "baseline_failed":
        raise typer.Exit(1)
    if fail_under is not None and (report.score is None or report.score < fail_under):
        raise typer.Exit(1)


def _print_mutation(report: object) -> None:
    from qits.mutation import MutationReport

    assert isinstance(report, MutationReport)
    if report.status == "baseline_failed":
        console.print(f"[red]{escape(report.summary)}[/red] — fix them first; last output:")
        console.print(escape(report.baseline_output or ""), markup=False)
        return
    if report.survivors:
        table = Table(title="surviving mutants")
        for col in ("file", "line", "operator", "change"):
            table.add_column(col)
        for m in report.survivors:
            table.add_row(
                m.file,
                str(m.line),
                m.operator.split("/")[-1].removeprefix("Replace"),
                escape(m.change),
            )
        out.print(table)
    style = "green" if not report.survived else "yellow"
    out.print(f"[{style}]{escape(report.summary)}[/{style}]")


@handle_errors
def security_scan_command(
    targets: Annotated[
        list[Path] | None,
        typer.Option("--targets", "-t", help="file or directory to scan; repeatable"),
    ] = None,
    more_targets: Annotated[
        list[Path] | None, typer.Argument(help="more targets (so --targets a b works)")
    ] = None,
    severity: Annotated[
        SeverityChoice, typer.Option(help="report findings of this severity and above")
    ] = SeverityChoice.low,
    fail_on: Annotated[
        FailOnChoice, typer.Option(help="exit 1 when a finding is at or above this severity")
    ] = FailOnChoice.critical,
    json_output: JsonOption = False,
) -> None:
    """bandit + detect-secrets, each finding with its CWE and OWASP Top 10:2021 category."""
    from qits.security import security_scan

    paths = [*(targets or []), *(more_targets or [])]
    if not paths:
        raise PathNotFound("scan target", "(none given: use --targets DIR)")
    report = security_scan(paths, severity=severity.value)
    if json_output:
        _print_json(report)
    else:
        table = Table(title=f"security findings ({severity.value} and above)")
        for col in ("severity", "rule", "where", "CWE", "OWASP"):
            table.add_column(col, no_wrap=True)
        table.add_column("message", overflow="fold")
        for f in report.findings:
            style = _SEVERITY_STYLE[f.severity]
            table.add_row(
                f"[{style}]{f.severity}[/{style}]",
                escape(f.rule_id),
                escape(f"{_relative(f.file)}:{f.line}"),
                f.cwe or "-",
                f.owasp.split("-")[0] if f.owasp else "-",
                escape(f.message),
            )
        out.print(table)
        counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
        out.print(f"{len(report.findings)} findings" + (f": {counts}" if counts else ""))
        for err in report.errors:
            console.print(f"[yellow]not scanned:[/yellow] {escape(err)}")
    if fail_on is not FailOnChoice.none and report.at_or_above(cast("Severity", fail_on.value)):
        raise typer.Exit(1)


@handle_errors
def coverage_command(
    tests: Annotated[Path, typer.Option("--tests", help="tests to run with pytest")],
    source: Annotated[Path, typer.Option("--source", help="source directory to measure")],
    data_file: Annotated[
        Path | None, typer.Option(help="keep the raw coverage data here (to combine later)")
    ] = None,
    fail_under: Annotated[
        float | None, typer.Option(help="exit 1 when coverage is below this percent")
    ] = None,
    plugins: Annotated[
        bool, typer.Option(help="let pytest autoload its plugins (--no-plugins is faster)")
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """Run the tests under coverage.py and report percent covered and missing lines per file."""
    from qits.coverage import run_coverage

    report = run_coverage(tests, source, data_file=data_file, load_plugins=plugins)
    if json_output:
        _print_json(report)
    else:
        table = Table(title=f"coverage of {report.source}")
        for col in ("file", "statements", "covered", "%", "missing lines"):
            table.add_column(col)
        for f in report.files:
            table.add_row(
                f.file,
                str(f.statements),
                str(f.covered),
                f"{f.percent:.1f}",
                _ranges(f.missing_lines),
            )
        out.print(table)
        out.print(f"total {report.percent:.1f}% ({report.covered}/{report.statements} statements)")
        if not report.tests_passed:
            console.print(f"[yellow]tests failed (pytest exit {report.tests_exit_code})[/yellow]")
    if not report.tests_passed or (fail_under is not None and report.percent < fail_under):
        raise typer.Exit(1)


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _ranges(lines: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    parts: list[str] = []
    for n in lines:
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts)


def _load(path: Path, kind: str) -> dict[str, object]:
    import json

    if not path.is_file():
        raise PathNotFound(f"{kind} report", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QualityToolError(
            f'{kind} report "{path}" is not JSON ({exc}) — write it with the --json option'
        ) from exc
    if not isinstance(data, dict):
        raise QualityToolError(f'{kind} report "{path}" is not a JSON object')
    return data


@handle_errors
def evaluate_gate_command(
    coverage: Annotated[float | None, typer.Option(help="coverage percent")] = None,
    coverage_report: Annotated[
        Path | None, typer.Option(help="JSON of `qits coverage --json` (instead of --coverage)")
    ] = None,
    mutation_score: Annotated[float | None, typer.Option(help="mutation score percent")] = None,
    mutation_report: Annotated[
        Path | None, typer.Option(help="JSON of `qits mutation-test --json`")
    ] = None,
    critical: Annotated[int | None, typer.Option(help="number of critical vulnerabilities")] = None,
    security_report: Annotated[
        Path | None, typer.Option(help="JSON of `qits security-scan --json`")
    ] = None,
    min_coverage: Annotated[float, typer.Option(help="coverage threshold")] = 80,
    min_mutation_score: Annotated[float, typer.Option(help="mutation score threshold")] = 75,
    max_critical: Annotated[int, typer.Option(help="critical vulnerabilities allowed")] = 0,
    json_output: JsonOption = False,
) -> None:
    """The quality gate: coverage >= min, mutation score >= min, critical vulnerabilities <= max."""
    from qits.gate import GateThresholds, evaluate_gate

    if coverage is None and coverage_report is not None:
        coverage = float(_load(coverage_report, "coverage")["percent"])  # type: ignore[arg-type]
    if mutation_score is None and mutation_report is not None:
        score = _load(mutation_report, "mutation")["score"]
        mutation_score = None if score is None else float(score)  # type: ignore[arg-type]
    elif mutation_score is None and mutation_report is None:
        raise QualityToolError("give --mutation-score or --mutation-report")
    if critical is None and security_report is not None:
        counts = _load(security_report, "security").get("counts")
        critical = int(counts.get("critical", 0)) if isinstance(counts, dict) else 0
    if coverage is None:
        raise QualityToolError("give --coverage or --coverage-report")
    if critical is None:
        raise QualityToolError("give --critical or --security-report")
    result = evaluate_gate(
        coverage,
        mutation_score,
        critical,
        GateThresholds(
            coverage=min_coverage,
            mutation_score=min_mutation_score,
            critical_vulnerabilities=max_critical,
        ),
    )
    if json_output:
        _print_json(result)
    else:
        table = Table(title="quality gate")
        for col in ("check", "actual", "required", "result"):
            table.add_column(col)
        for c in result.checks:
            actual = "-" if c.actual is None else f"{c.actual:g}"
            verdict = "[green]pass[/green]" if c.passed else "[red]FAIL[/red]"
            table.add_row(c.name, actual, f"{c.comparison} {c.threshold:g}", verdict)
        out.print(table)
        out.print("[green]gate passed[/green]" if result.passed else "[red]gate failed[/red]")
    if not result.passed:
        raise typer.Exit(1)
