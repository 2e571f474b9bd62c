"""``buildkit qits generate-tests``: write pytest modules for an OpenAPI document.

The lead mounts :func:`generate_tests_command` on the ``qits`` Typer app. It is
the entry point, so it is where ``BAR_LLM_*`` is read (enrichment stays off
unless ``BAR_LLM_URL`` is set). What the generator could not handle is printed
per operation; that is a report, not a failure, so the exit code stays 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from buildkit.cli.common import console, handle_errors, out
from qits.llm import LlmEnricher, LlmSettings
from qits.testgen import DEFAULT_BASE_URL, GeneratedTests, generate_tests


@handle_errors
def generate_tests_command(
    spec: Annotated[Path, typer.Option("--spec", help="OpenAPI 3.0/3.1 document, JSON or YAML")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="directory for conftest.py and test_<resource>.py")
    ] = Path("generated_tests"),
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url",
            help="default API URL written into conftest.py "
            "(overridden at run time by --base-url or BAR_QITS_BASE_URL)",
        ),
    ] = DEFAULT_BASE_URL,
) -> None:
    """Generate pytest modules that check a running API against its OpenAPI document."""
    settings = LlmSettings()
    llm = LlmEnricher(settings) if settings.url else None
    result = generate_tests(spec, out_dir, default_base_url=base_url, llm=llm)
    print_report(result, out_dir)


def print_report(result: GeneratedTests, out_dir: Path) -> None:
    """Files written, tests per operation, and what was not provoked or not supported."""
    count = sum(len(op.tests) for op in result.operations)
    out.print(
        f"{len(result.files)} files, {count} test functions for {escape(result.title)} "
        f"(OpenAPI {result.openapi_version}) in {escape(str(out_dir))}"
    )
    for op in result.operations:
        if op.unsupported:
            for reason in op.unsupported:
                console.print(
                    f"[yellow]unsupported[/yellow] {escape(op.operation)}: {escape(reason)}"
                )
        for note in op.notes:
            console.print(f"note {escape(op.operation)}: {escape(note)}")
        if op.not_provoked:
            console.print(
                f"not provoked {escape(op.operation)}: {', '.join(op.not_provoked)} "
                "(documented, no deterministic request causes it)"
            )
    for call in result.llm_calls:
        console.print(
            f"llm {escape(call.operation)}: {call.model} prompt_tokens={call.prompt_tokens} "
            f"completion_tokens={call.completion_tokens} {call.duration_ms} ms "
            f"{escape(call.outcome)}"
        )
