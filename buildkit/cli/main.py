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
    from buildkit.cli import audit, demo, dev, io, schemas, topics

    app.add_typer(audit.app, name="audit")
    app.add_typer(dev.app, name="dev")
    app.add_typer(schemas.app, name="schemas")
    app.add_typer(topics.app, name="topics")
    io.register(app)
    app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()
