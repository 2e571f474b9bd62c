"""Typed settings read from ``BAR_*`` environment variables.

Read once at the application entry point (CLI, servers); library classes take a
:class:`Settings` object. Every Kafka client option is mapped to librdkafka's
dotted keys here and nowhere else, so SASL, TLS and any other property a
production cluster needs is reachable through settings alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]

# librdkafka properties whose values are credentials: never printed.
_SECRET_KAFKA_KEYS = frozenset(
    {"sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret"}
)


class Settings(BaseSettings):
    """Connection and runtime settings for every Agent BuildKit process."""

    model_config = SettingsConfigDict(env_prefix="BAR_", frozen=True, extra="ignore")

    # Kafka ---------------------------------------------------------------
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    # SecretStr: any of them may be a credential (sasl.oauthbearer.client.secret, ...).
    kafka_properties: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Any other librdkafka property, as a JSON object: "
        'BAR_KAFKA_PROPERTIES=\'{"socket.keepalive.enable": "true"}\'',
    )
    client_timeout_s: float = Field(default=6.0, gt=0)
    # Kafka's 45 s default makes a group's first join wait for most of it on some
    # brokers, and detects dead replicas late; 10 s is a common production choice.
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1000)

    # Schema registry -----------------------------------------------------
    schema_registry_url: str = "http://127.0.0.1:8081"
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_location: str | None = None

    # Postgres --------------------------------------------------------------
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:55432/buildkit")

    # GitLab ------------------------------------------------------------------
    gitlab_url: str | None = Field(
        default=None, description="GitLab base URL for the sink; unset: actions are only recorded"
    )
    gitlab_token: SecretStr | None = Field(default=None, description="GitLab API token")
    gitlab_webhook_secret: SecretStr | None = Field(
        default=None, description="the X-Gitlab-Token every project's webhook sends"
    )
    gitlab_project_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="per-project webhook secrets, a JSON object keyed by project id or path: "
        'BAR_GITLAB_PROJECT_SECRETS=\'{"42": "s3cret", "group/app": "other"}\'',
    )
    gitlab_webhook_host: str = "127.0.0.1"
    gitlab_webhook_port: int = Field(default=8090, ge=0, le=65535)
    gitlab_max_body_bytes: int = Field(
        default=960 * 1024,
        ge=1024,
        description="largest GitLab webhook body accepted (413 above); also capped by what "
        "fits in one Kafka record (the producer's message.max.bytes, 1,000,000 by default, "
        "less 16 KiB): for bigger deliveries raise message.max.bytes of the producer and the "
        "broker via BAR_KAFKA_PROPERTIES, and this",
    )

    # Runtime ---------------------------------------------------------------
    data_dir: Path = Path(".bar")
    source: str = "buildkit"
    dlq_max_attempts: int = Field(default=3, ge=1)

    @field_validator("kafka_properties", "gitlab_project_secrets", mode="before")
    @classmethod
    def _parse_properties(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                variable = f"BAR_{(info.field_name or '').upper()}"
                raise ValueError(f"{variable} is not a JSON object: {exc}") from exc
        if isinstance(value, dict):
            return {
                str(k): v if isinstance(v, SecretStr) else SecretStr(str(v))
                for k, v in value.items()
            }
        return value

    # librdkafka -------------------------------------------------------------
    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """The librdkafka configuration for these settings, plus ``overrides``."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update({k: v.get_secret_value() for k, v in self.kafka_properties.items()})
        conf.update(overrides)
        return conf

    def registry_config(self) -> dict[str, Any]:
        """Configuration for confluent-kafka's ``SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.schema_registry_url}
        if self.schema_registry_username is not None:
            password = _reveal(self.schema_registry_password) or ""
            conf["basic.auth.user.info"] = f"{self.schema_registry_username}:{password}"
        if self.schema_registry_ca_location:
            conf["ssl.ca.location"] = self.schema_registry_ca_location
        return conf

    def database_dsn(self) -> str:
        """The Postgres connection string, credentials included (never print it)."""
        return self.database_url.get_secret_value()

    def display_database_url(self) -> str:
        """The Postgres URL with any password masked, safe to print."""
        return redact_url(self.database_dsn())


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def redact_url(url: str) -> str:
    """``scheme://user:***@host/db`` — the URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_kafka_config(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config with credentials masked, safe to log."""
    return {k: ("***" if k in _SECRET_KAFKA_KEYS else v) for k, v in conf.items()}


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` (or a URL) into its parts."""
    if "://" in address:
        parts = urlsplit(address)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        return first, default_port
    return host.strip("[]"), int(port)
