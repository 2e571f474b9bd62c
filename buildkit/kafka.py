"""Shared Kafka plumbing: reachability checks and topic metadata with clear errors."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from buildkit.errors import BrokerUnavailable, UnknownTopic
from buildkit.settings import Settings

# librdkafka logs connection failures to stderr on its own; route them to Python
# logging instead so a CLI user sees one clear error, not a stream of retries.
_QUIET = {"log_level": 0}


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient for the configured cluster."""
    return AdminClient(settings.kafka_config(**_QUIET))


def cluster_metadata(client: Any, settings: Settings, topic: str | None = None) -> ClusterMetadata:
    """Cluster (or one topic's) metadata; :class:`BrokerUnavailable` if nobody answers."""
    try:
        md: ClusterMetadata = client.list_topics(topic, timeout=settings.client_timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers} within "
            f"{settings.client_timeout_s:g}s: {exc.args[0].str() if exc.args else exc} — "
            "start it with `buildkit dev up` or set BAR_BOOTSTRAP_SERVERS"
        ) from exc
    return md


def next_batch(consumer: Any, max_messages: int, timeout: float) -> list[Any]:
    """Up to ``max_messages`` messages: waits up to ``timeout`` for the first, then takes
    only what is already fetched. ``Consumer.consume(n, timeout)`` alone waits the whole
    timeout unless ``n`` messages arrive, which adds its full length to every small batch."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)]


def missing_topic(settings: Settings, *topics: str) -> UnknownTopic:
    """The error for topics that do not exist on the broker."""
    names = ", ".join(f'"{t}"' for t in topics)
    return UnknownTopic(
        f"topic {names} does not exist on {settings.bootstrap_servers} — run: buildkit topics apply"
    )


def require_topics(client: Any, settings: Settings, topics: list[str]) -> ClusterMetadata:
    """Metadata of the cluster, after checking every topic in ``topics`` exists on it."""
    md = cluster_metadata(client, settings)
    missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None]
    if missing:
        raise missing_topic(settings, *missing)
    return md


def tail_consumer(
    settings: Settings,
    topic: str,
    lookback: int,
    *,
    eof: bool = False,
    name: str = "bar-tail",
) -> Any:
    """A consumer assigned (no group, nothing committed) to every partition of ``topic``,
    ``lookback`` records before its end. The end is ListOffsets' high watermark, a lower
    bound on some brokers (DESIGN.md), so it starts *at least* ``lookback`` back."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": name,  # required by the client; never joined
                "enable.auto.commit": False,
                "enable.partition.eof": eof,
                # Every fetch on the embedded broker waits this long: keep reads quick.
                "fetch.wait.max.ms": 10,
                "log_level": 0,
            }
        )
    )
    try:
        md = require_topics(consumer, settings, [topic])
        start = []
        for p in sorted(md.topics[topic].partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=settings.client_timeout_s
            )
            start.append(TopicPartition(topic, p, max(low, high - lookback)))
        consumer.assign(start)
    except BaseException:
        consumer.close()
        raise
    return consumer
