"""``buildkit qits``: the quality tooling from the command line. Each command lives
next to what it runs; this module only gathers them into one group."""

from __future__ import annotations

import typer

from qits.apibuild_cli import build_api_command
from qits.quality_cli import (
    coverage_command,
    evaluate_gate_command,
    mutation_test_command,
    security_scan_command,
)
from qits.testgen_cli import generate_tests_command

__all__ = ["app"]

app = typer.Typer(
    help="QITS: tests generated from OpenAPI, an API built from it, mutation testing, "
    "security scanning, coverage and the quality gate.",
    no_args_is_help=True,
)
app.command("generate-tests")(generate_tests_command)
app.command("build-api")(build_api_command)
app.command("mutation-test")(mutation_test_command)
app.command("security-scan")(security_scan_command)
app.command("coverage")(coverage_command)
app.command("evaluate-gate")(evaluate_gate_command)
