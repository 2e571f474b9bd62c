"""The ``buildkit`` console script: buildkit's own commands plus the outer packages' ones.

:mod:`buildkit` never imports the outer packages (``tests/test_layers.py``), so the
command groups and dev-stack parts that live in ``streams``, ``agents`` and
``connectors`` are added here, explicitly, on top of :func:`buildkit.cli.main._register`.
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point."""
    from agents import cli as agents_cli
    from buildkit.cli import main as buildkit_main
    from buildkit.dev.stack import register_part
    from connectors.gitlab.connect_cli import connect_app
    from connectors.gitlab.sink_cli import gitlab_app
    from connectors.gitlab.stack import stack_part as gitlab_webhook_part
    from qits import cli as qits_cli
    from streams.roe import cli as roe_cli
    from streams.swarm import cli as swarm_cli
    from streams.swarm.stack import stack_part as swarm_part

    register_part(swarm_part)
    register_part(gitlab_webhook_part)
    buildkit_main._register()
    buildkit_main.app.add_typer(roe_cli.app, name="roe")
    buildkit_main.app.add_typer(agents_cli.app, name="agents")
    buildkit_main.app.add_typer(swarm_cli.app, name="swarm")
    buildkit_main.app.add_typer(connect_app, name="connect")
    buildkit_main.app.add_typer(gitlab_app, name="gitlab")
    buildkit_main.app.add_typer(qits_cli.app, name="qits")
    buildkit_main.app()
