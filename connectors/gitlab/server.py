"""Run the GitLab webhook app under uvicorn, in the foreground, until SIGINT or SIGTERM.

Both signals stop it the same way: uvicorn stops accepting, finishes the requests
in progress (each waits for its broker ack), the producer flushes, and
:func:`serve` returns. Used by ``buildkit connect gitlab`` and by
``python -m connectors.gitlab`` (the dev stack's part).
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable

from buildkit.settings import Settings
from connectors.gitlab.auth import TokenChecker, dev_secret, dev_secret_path, secrets_configured

__all__ = ["resolve_tokens", "serve"]

log = logging.getLogger(__name__)


def resolve_tokens(
    settings: Settings, *, insecure_no_token: bool = False, use_dev_secret: bool = False
) -> TokenChecker:
    """The token rule for a server: the configured secrets; with none configured, the
    dev secret file (``use_dev_secret``), or no check (``insecure_no_token``), or
    ConfigError saying how to configure one."""
    configured = secrets_configured(settings)
    if not configured and use_dev_secret:
        token = dev_secret(settings)
        log.warning(
            "no GitLab webhook secret configured: using the dev secret in %s",
            dev_secret_path(settings),
        )
        return TokenChecker.from_settings(settings, fallback=token)
    return TokenChecker.from_settings(settings, insecure=insecure_no_token and not configured)


def serve(
    settings: Settings,
    tokens: TokenChecker,
    *,
    host: str | None = None,
    port: int | None = None,
    access_log: bool = True,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``POST /webhooks/gitlab`` on ``host:port`` (default: the settings') until
    SIGINT/SIGTERM; ``on_listening`` gets the webhook URL once the socket is bound."""
    import uvicorn

    from connectors.gitlab.webhook import WEBHOOK_PATH, create_app

    host = host or settings.gitlab_webhook_host
    port = settings.gitlab_webhook_port if port is None else port
    app = create_app(settings, tokens=tokens)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        lifespan="on",
        # GitLab's own timeout is 10 s: a request still waiting longer is not worth keeping.
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = _server_class()(config, on_listening, WEBHOOK_PATH)
    # uvicorn handles both signals itself, then re-raises the one it caught once it has
    # stopped; SIGTERM then behaves like Ctrl-C: a KeyboardInterrupt the caller ends on.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(f"the GitLab webhook did not start on {host}:{port}; see the log above")


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling ``on_listening`` the URL once it is ready."""

        def __init__(
            self, config: uvicorn.Config, on_listening: Callable[[str], None] | None, path: str
        ) -> None:
            super().__init__(config)
            self.on_listening = on_listening
            self.path = path

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_listening is not None:
                host, port = self.config.host, self.config.port
                for server in self.servers:  # the bound port, also when asked for port 0
                    for sock in server.sockets:
                        port = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                self.on_listening(f"http://{shown}:{port}{self.path}")

    return Server
