"""The GitLab webhook as a part of the dev stack: ``buildkit dev up`` starts
``python -m connectors.gitlab`` after Kafka and the registry, and it answers when
``GET /healthz`` does (the seen-set restored, ready for deliveries).

Kept light (no FastAPI or Kafka client imports): the console script registers it
on every start.
"""

from __future__ import annotations

from buildkit.dev.stack import Part, StackPaths, http_answers, module_part
from buildkit.settings import Settings

__all__ = ["WEBHOOK_PATH", "local_base_url", "stack_part", "webhook_url"]

_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - names the wildcard, binds nothing
#: Where the webhook app takes deliveries (:mod:`connectors.gitlab.webhook` uses it).
WEBHOOK_PATH = "/webhooks/gitlab"


def _local_host(settings: Settings) -> str:
    # A wildcard listener is reached (and its port checked) on loopback.
    host = settings.gitlab_webhook_host
    return "127.0.0.1" if host in _ANY_ADDRESS else host


def local_base_url(settings: Settings) -> str:
    """``http://HOST:PORT`` of the webhook on ``BAR_GITLAB_WEBHOOK_HOST:PORT``, as reached
    from this machine (a wildcard host is reached on 127.0.0.1)."""
    local = _local_host(settings)
    shown = f"[{local}]" if ":" in local else local
    return f"http://{shown}:{settings.gitlab_webhook_port}"


def webhook_url(settings: Settings) -> str:
    """The full URL deliveries are posted to, ``.../webhooks/gitlab``, from this machine."""
    return local_base_url(settings) + WEBHOOK_PATH


def stack_part(settings: Settings, paths: StackPaths) -> Part:
    """The webhook as a dev-stack part on ``BAR_GITLAB_WEBHOOK_HOST:PORT``."""
    from connectors.gitlab.auth import dev_secret_path, secrets_configured

    local = _local_host(settings)
    port = settings.gitlab_webhook_port
    base = local_base_url(settings)
    if secrets_configured(settings):
        where = "token: BAR_GITLAB_WEBHOOK_SECRET / BAR_GITLAB_PROJECT_SECRETS"
    else:
        where = f"token in {dev_secret_path(settings).absolute()}"
    return module_part(
        name="gitlab-webhook",
        module="connectors.gitlab",
        paths=paths,
        address=f"{webhook_url(settings)} ({where})",
        setting="BAR_GITLAB_WEBHOOK_PORT",
        example=str(18090 if port != 18090 else 18091),
        check=lambda: http_answers(f"{base}/healthz"),
        host=local,
        port=port,
        after=("kafka", "schema-registry"),
    )
