"""Who may deliver: the ``X-Gitlab-Token`` check of the GitLab webhook.

GitLab sends the secret configured on the webhook verbatim in ``X-Gitlab-Token``.
The rule:

* the delivery's project (``project.id`` / ``project_id``, or
  ``project.path_with_namespace`` / ``path_with_namespace`` of the body) has a
  secret in ``BAR_GITLAB_PROJECT_SECRETS`` (keyed by id or path): that one must match;
* otherwise ``BAR_GITLAB_WEBHOOK_SECRET`` must match;
* with neither, nobody may deliver — unless the checker was built ``insecure``
  (``buildkit connect gitlab --insecure-no-token``), which accepts every delivery.

Every comparison is :func:`hmac.compare_digest` on bytes, so the time taken does
not tell a caller how much of a token was right. :meth:`TokenChecker.may_match`
compares against every secret before the body is read: a caller without any valid
token is turned away before it can make the server buffer a large body.

A server without configured secrets does not start (``ConfigError``), except the
dev stack's ``python -m connectors.gitlab``, which uses a generated secret kept in
``<BAR_DATA_DIR>/run/gitlab-webhook.secret`` (:func:`dev_secret`).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from buildkit.errors import ConfigError
from buildkit.settings import Settings

__all__ = [
    "SETUP_HELP",
    "TokenChecker",
    "dev_secret",
    "dev_secret_path",
    "secrets_configured",
    "token_for",
]

SETUP_HELP = (
    "no GitLab webhook secret is configured — set BAR_GITLAB_WEBHOOK_SECRET (or "
    'BAR_GITLAB_PROJECT_SECRETS=\'{"<project id or path>": "<secret>"}\'), or pass '
    "--dev-secret to generate one under BAR_DATA_DIR, or --insecure-no-token to accept "
    "deliveries without a token"
)


def secrets_configured(settings: Settings) -> bool:
    """Does ``settings`` configure any webhook secret (global or per project)?"""
    return settings.gitlab_webhook_secret is not None or bool(settings.gitlab_project_secrets)


def token_for(settings: Settings, project_id: object = None, project_path: object = None) -> str:
    """The ``X-Gitlab-Token`` a delivery for this project must carry: the project's secret
    (``BAR_GITLAB_PROJECT_SECRETS`` by id, else by path), else
    ``BAR_GITLAB_WEBHOOK_SECRET``, else — nothing configured — the dev stack's secret
    (:func:`dev_secret`, generated on first use). What to set on a GitLab webhook."""
    for key in (project_id, project_path):
        if isinstance(key, int | str) and not isinstance(key, bool):
            found = settings.gitlab_project_secrets.get(str(key))
            if found is not None:
                return found.get_secret_value()
    if settings.gitlab_webhook_secret is not None:
        return settings.gitlab_webhook_secret.get_secret_value()
    return dev_secret(settings)


class TokenChecker:
    """Checks ``X-Gitlab-Token`` against a global secret and per-project secrets."""

    def __init__(
        self,
        global_secret: SecretStr | str | None = None,
        project_secrets: Mapping[str, SecretStr | str] | None = None,
        *,
        insecure: bool = False,
    ) -> None:
        self._global = None if global_secret is None else _bytes(global_secret)
        self._projects = {k: _bytes(v) for k, v in (project_secrets or {}).items()}
        self.insecure = insecure
        if not insecure and self._global is None and not self._projects:
            raise ConfigError(SETUP_HELP)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, insecure: bool = False, fallback: str | None = None
    ) -> TokenChecker:
        """The checker for ``settings``; ``fallback`` is the global secret when the
        settings configure none at all (the dev stack's generated secret)."""
        configured = secrets_configured(settings)
        global_secret = settings.gitlab_webhook_secret
        if not configured and fallback is not None:
            global_secret = SecretStr(fallback)
        return cls(global_secret, settings.gitlab_project_secrets, insecure=insecure)

    @property
    def describe(self) -> str:
        """What a delivery must carry, for log lines (never the secrets)."""
        if self.insecure and self._global is None and not self._projects:
            return "no token checked (--insecure-no-token)"
        parts = []
        if self._global is not None:
            parts.append("the global secret")
        if self._projects:
            parts.append(f"{len(self._projects)} per-project secret(s)")
        return "X-Gitlab-Token must match " + " or ".join(parts)

    def may_match(self, token: str | None) -> bool:
        """Could ``token`` be right for some project? Checked before the body is read."""
        if self.insecure:
            return True
        if token is None:
            return False
        given = _token_bytes(token)
        found = False
        # No early exit: every secret is compared, whichever matches.
        for secret in (self._global, *self._projects.values()):
            if secret is not None and hmac.compare_digest(given, secret):
                found = True
        return found

    def allows(self, token: str | None, project_id: object, project_path: object) -> bool:
        """Is ``token`` the secret of this delivery's project (or the global one)?"""
        if self.insecure:
            return True
        expected = self.secret_for(project_id, project_path)
        if token is None or expected is None:
            return False
        return hmac.compare_digest(_token_bytes(token), expected)

    def secret_for(self, project_id: object, project_path: object) -> bytes | None:
        """The secret a delivery of this project must carry: its own, else the global one."""
        for key in (project_id, project_path):
            # bool is an int: a body's `"project_id": true` names no project.
            if isinstance(key, int | str) and not isinstance(key, bool):
                found = self._projects.get(str(key))
                if found is not None:
                    return found
        return self._global


def _bytes(value: SecretStr | str) -> bytes:
    """A configured secret as the octets a client sends for it (UTF-8)."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return text.encode("utf-8", "surrogateescape")


def _token_bytes(token: str) -> bytes:
    """The header's octets: ASGI servers hand header values over decoded as latin-1."""
    try:
        return token.encode("latin-1")
    except UnicodeEncodeError:  # not from a header: plain text
        return token.encode("utf-8", "surrogateescape")


def dev_secret_path(settings: Settings) -> Path:
    """Where the dev stack keeps its generated webhook secret."""
    return settings.data_dir / "run" / "gitlab-webhook.secret"


def dev_secret(settings: Settings) -> str:
    """The dev stack's webhook secret: read from :func:`dev_secret_path`, or generated
    there (owner-readable only) on first use, so it survives ``dev down`` / ``dev up``."""
    path = dev_secret_path(settings)
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two processes starting at once must not write two different secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
