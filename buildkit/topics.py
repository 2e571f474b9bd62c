"""Topic administration driven by the catalog: apply, inspect, and measure lag.

``apply_topics`` is idempotent: it creates what is missing, raises partition
counts that are too low, and sets configs that drifted. It never deletes a
topic or lowers a partition count (Kafka cannot); it reports those as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from buildkit.catalog import Catalog
from buildkit.errors import BuildKitError
from buildkit.kafka import admin_client, cluster_metadata, missing_topic
from buildkit.settings import Settings

ChangeKind = Literal["created", "partitions", "config", "unchanged"]


@dataclass(frozen=True)
class TopicChange:
    """What ``apply`` did to one topic."""

    topic: str
    kind: ChangeKind
    detail: str = ""


def apply_topics(
    settings: Settings, catalog: Catalog, *, replication_factor: int = 1
) -> list[TopicChange]:
    """Make the broker's topics match the catalog; return what changed, topic by topic."""
    admin = admin_client(settings)
    md = cluster_metadata(admin, settings)
    timeout = settings.client_timeout_s
    changes: list[TopicChange] = []

    missing = [spec for spec in catalog if spec.name not in md.topics]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=replication_factor,
                    config=spec.kafka_config(),
                )
                for spec in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for spec in missing:
            try:
                futures[spec.name].result()
            except KafkaException as exc:
                err = exc.args[0]
                if err.name() != "TOPIC_ALREADY_EXISTS":  # created concurrently: fine
                    raise BuildKitError(f"cannot create topic {spec.name}: {err.str()}") from exc
            changes.append(
                TopicChange(
                    spec.name, "created", f"{spec.partitions} partition(s), {spec.kafka_config()}"
                )
            )

    existing = [spec for spec in catalog if spec.name in md.topics]
    grow = []
    for spec in existing:
        have = len(md.topics[spec.name].partitions)
        if have > spec.partitions:
            raise BuildKitError(
                f"topic {spec.name} has {have} partitions on the broker but the catalog declares "
                f"{spec.partitions}; Kafka cannot remove partitions — raise the catalog's count"
            )
        if have < spec.partitions:
            grow.append((spec, have))
    if grow:
        futures = admin.create_partitions(
            [NewPartitions(spec.name, spec.partitions) for spec, _ in grow],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for spec, have in grow:
            try:
                futures[spec.name].result()
            except KafkaException as exc:
                raise BuildKitError(
                    f"cannot grow topic {spec.name} to {spec.partitions} partitions: "
                    f"{exc.args[0].str()}"
                ) from exc
            changes.append(TopicChange(spec.name, "partitions", f"{have} → {spec.partitions}"))

    if existing:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in existing]
        described = admin.describe_configs(resources, request_timeout=timeout)
        for spec, resource in zip(existing, resources, strict=True):
            try:
                current = {k: v.value for k, v in described[resource].result().items()}
            except KafkaException:
                current = {}
            drift = {k: v for k, v in spec.kafka_config().items() if current.get(k) != v}
            if not drift:
                if not any(c.topic == spec.name for c in changes):
                    changes.append(TopicChange(spec.name, "unchanged"))
                continue
            alter = ConfigResource(
                ConfigResource.Type.TOPIC,
                spec.name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in drift.items()
                ],
            )
            try:
                admin.incremental_alter_configs([alter], request_timeout=timeout)[alter].result()
            except KafkaException as exc:
                raise BuildKitError(
                    f"cannot set {drift} on topic {spec.name}: {exc.args[0].str()}"
                ) from exc
            changes.append(
                TopicChange(spec.name, "config", ", ".join(f"{k}={v}" for k, v in drift.items()))
            )
    return changes


@dataclass(frozen=True)
class PartitionInfo:
    """Offsets of one partition. ``high`` is a lower bound on some brokers (see DESIGN.md)."""

    partition: int
    low: int
    high: int


@dataclass(frozen=True)
class GroupLag:
    """A consumer group's committed offsets and lag on one topic."""

    group: str
    committed: dict[int, int]
    lag: dict[int, int]

    @property
    def total(self) -> int:
        """Summed lag over partitions (a lower bound where the high watermark is)."""
        return sum(self.lag.values())


@dataclass(frozen=True)
class TopicDescription:
    """A topic as the broker sees it."""

    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str]
    groups: list[GroupLag] = field(default_factory=list)


def describe_topic(settings: Settings, name: str, *, with_groups: bool = True) -> TopicDescription:
    """Partitions, low/high offsets, configs and (optionally) consumer-group lag of ``name``."""
    admin = admin_client(settings)
    md = cluster_metadata(admin, settings)
    if name not in md.topics:
        raise missing_topic(settings, name)
    partitions = sorted(md.topics[name].partitions)
    consumer = Consumer(
        settings.kafka_config(**{"group.id": "bar-topics-describe", "log_level": 0})
    )
    try:
        infos = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(name, p), timeout=settings.client_timeout_s
            )
            infos.append(PartitionInfo(p, low, high))
    finally:
        consumer.close()
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        entries = admin.describe_configs([resource], request_timeout=settings.client_timeout_s)[
            resource
        ].result()
        config = {k: str(v.value) for k, v in entries.items() if v.value is not None}
    except KafkaException:
        config = {}
    groups = _group_lag(settings, admin, name, infos) if with_groups else []
    return TopicDescription(name, infos, config, groups)


def _group_lag(
    settings: Settings, admin: object, topic: str, infos: list[PartitionInfo]
) -> list[GroupLag]:
    from confluent_kafka.admin import AdminClient

    assert isinstance(admin, AdminClient)
    timeout = settings.client_timeout_s
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException:
        return []
    highs = {info.partition: info.high for info in infos}
    result = []
    for group in sorted(g.group_id for g in listed.valid):
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in highs])
        try:
            offsets = admin.list_consumer_group_offsets([request], request_timeout=timeout)[
                group
            ].result()
        except KafkaException:
            continue
        committed = {
            tp.partition: tp.offset
            for tp in offsets.topic_partitions
            if tp.offset is not None and tp.offset >= 0
        }
        if not committed:
            continue
        lag = {p: max(0, highs[p] - committed.get(p, 0)) for p in highs}
        result.append(GroupLag(group, committed, lag))
    return result
