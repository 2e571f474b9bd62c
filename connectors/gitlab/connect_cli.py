"""``buildkit connect gitlab``: run the GitLab webhook in the foreground.

The console script adds :data:`connect_app` as the ``connect`` group; the other
connectors add their commands to it later. Kept light: uvicorn, FastAPI and the
Kafka client load only when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from buildkit.cli.common import handle_errors, load_settings, out

__all__ = ["connect_app"]

connect_app = typer.Typer(
    help="Connectors: run the edges to the outside world (GitLab webhooks, ...).",
    no_args_is_help=True,
)


@connect_app.callback()
def _group() -> None:
    """Connectors: run the edges to the outside world."""


@connect_app.command("gitlab")
@handle_errors
def gitlab(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default BAR_GITLAB_WEBHOOK_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default BAR_GITLAB_WEBHOOK_PORT).")
    ] = None,
    dev_secret: Annotated[
        bool,
        typer.Option(
            "--dev-secret",
            help="With no secret configured: use (or generate) the one in "
            "BAR_DATA_DIR/run/gitlab-webhook.secret.",
        ),
    ] = False,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="With no secret configured: accept deliveries without checking X-Gitlab-Token.",
        ),
    ] = False,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = True,
) -> None:
    """Receive GitLab webhooks on POST /webhooks/gitlab and publish each delivery, normalized,
    on bar.gitlab.events (keyed by project id), answering 200 once Kafka acknowledged it.

    X-Gitlab-Token must match the project's secret (BAR_GITLAB_PROJECT_SECRETS) or the
    global one (BAR_GITLAB_WEBHOOK_SECRET); with none configured it refuses to start
    unless --dev-secret or --insecure-no-token is given. Ctrl-C stops it.

    Example: BAR_GITLAB_WEBHOOK_SECRET=s3cret buildkit connect gitlab --port 8090
    """
    import logging

    from connectors.gitlab.auth import dev_secret_path, secrets_configured
    from connectors.gitlab.server import resolve_tokens, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    tokens = resolve_tokens(
        settings, insecure_no_token=insecure_no_token, use_dev_secret=dev_secret
    )

    def listening(url: str) -> None:
        out.print(f"GitLab webhook listening on {url} → bar.gitlab.events; Ctrl-C stops it")
        if dev_secret and not secrets_configured(settings):
            out.print(f"secret token: the contents of {dev_secret_path(settings)}")

    serve(settings, tokens, host=host, port=port, access_log=access_log, on_listening=listening)
    out.print("GitLab webhook stopped")


if __name__ == "__main__":
    connect_app()
