"""Settings: every address and credential from BAR_*, credentials never shown."""

from __future__ import annotations

import pytest

from buildkit.settings import Settings, redact_kafka_config, redact_url


def test_sasl_tls_and_any_librdkafka_property_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("BAR_BOOTSTRAP_SERVERS", "kafka-1.prod:9093,kafka-2.prod:9093")
    monkeypatch.setenv("BAR_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BAR_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BAR_SASL_USERNAME", "buildkit")
    monkeypatch.setenv("BAR_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("BAR_SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    monkeypatch.setenv(
        "BAR_KAFKA_PROPERTIES", '{"client.rack": "eu-1a", "sasl.oauthbearer.client.secret": "s3"}'
    )
    monkeypatch.setenv("BAR_SCHEMA_REGISTRY_USERNAME", "bk")
    monkeypatch.setenv("BAR_SCHEMA_REGISTRY_PASSWORD", "regpass")
    monkeypatch.setenv("BAR_DATABASE_URL", "postgresql://bar:dbpass@db.prod:5432/buildkit")
    settings = Settings()
    conf = settings.kafka_config(**{"group.id": "g"})
    assert conf == {
        "bootstrap.servers": "kafka-1.prod:9093,kafka-2.prod:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "buildkit",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "client.rack": "eu-1a",
        "sasl.oauthbearer.client.secret": "s3",
        "group.id": "g",
    }
    assert settings.registry_config()["basic.auth.user.info"] == "bk:regpass"
    shown = repr(settings) + str(settings) + settings.display_database_url()
    for secret in ("hunter2", "s3", "regpass", "dbpass"):
        assert secret not in shown
    assert settings.display_database_url() == "postgresql://bar:***@db.prod:5432/buildkit"
    assert redact_kafka_config(conf)["sasl.password"] == "***"


def test_malformed_settings_name_the_variable(monkeypatch):
    from buildkit.cli.common import load_settings
    from buildkit.errors import ConfigError

    monkeypatch.setenv("BAR_KAFKA_PROPERTIES", "{not json")
    with pytest.raises(ConfigError, match="BAR_KAFKA_PROPERTIES"):
        load_settings()
    monkeypatch.delenv("BAR_KAFKA_PROPERTIES")
    monkeypatch.setenv("BAR_SECURITY_PROTOCOL", "SASL_SSL_PLEASE")
    with pytest.raises(ConfigError, match="BAR_SECURITY_PROTOCOL"):
        load_settings()


def test_redact_url_keeps_urls_without_passwords():
    assert (
        redact_url("postgresql://postgres@127.0.0.1:5432/x")
        == "postgresql://postgres@127.0.0.1:5432/x"
    )
