"""Optional HTTP basic auth for the registry, from ``BAR_SCHEMA_REGISTRY_USERNAME/PASSWORD``."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field

from buildkit.errors import ConfigError
from buildkit.settings import Settings


@dataclass(frozen=True)
class BasicAuth:
    """The one username and password the registry accepts."""

    username: str
    password: str = field(repr=False)  # never in logs or reprs

    @classmethod
    def from_settings(cls, settings: Settings) -> BasicAuth | None:
        """The credentials to require, or ``None`` when neither setting is given."""
        username = settings.schema_registry_username
        password = settings.schema_registry_password
        if username is None and password is None:
            return None
        if username is None or password is None:
            missing = (
                "BAR_SCHEMA_REGISTRY_PASSWORD"
                if password is None
                else ("BAR_SCHEMA_REGISTRY_USERNAME")
            )
            raise ConfigError(
                f"{missing} is not set: set both BAR_SCHEMA_REGISTRY_USERNAME and "
                "BAR_SCHEMA_REGISTRY_PASSWORD to require basic auth, or neither"
            )
        return cls(username, password.get_secret_value())

    def accepts(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header carries these credentials."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both compared in constant time, and both always compared, so the
        # response time says nothing about which part (or how much of it) matched.
        user_ok = hmac.compare_digest(user, self.username.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return bool(sep) and user_ok and password_ok
