"""The ``buildkit`` command line. Sub-commands are registered here, explicitly."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="buildkit",
    help="Agent BuildKit: Avro events on Kafka, the embedded dev stack, replay and audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here, not at module level, so that ``import buildkit`` stays cheap.
    # One line per command group; each module exposes a ``typer.Typer`` named ``app``.
    from buildkit.cli import dev

    app.add_typer(dev.app, name="dev")


def main() -> None:
    """Console-script entry point."""
    _register()
    app()
