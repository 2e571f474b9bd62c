"""``buildkit topics``: apply the catalog, write Strimzi manifests, list and describe topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from buildkit.cli.common import handle_errors, load_settings, out

app = typer.Typer(help="The topic catalog on the broker and as Strimzi KafkaTopic manifests.")


@app.command("apply")
@handle_errors
def apply(
    replication_factor: Annotated[
        int, typer.Option(help="Replicas for topics created now (1 on the embedded broker).")
    ] = 1,
) -> None:
    """Create or alter every catalog topic, idempotently.

    Example: buildkit topics apply
    """
    from buildkit.catalog import default_catalog
    from buildkit.topics import apply_topics

    settings = load_settings()
    changes = apply_topics(settings, default_catalog(), replication_factor=replication_factor)
    table = Table("topic", "change", "detail", title=f"topics on {settings.bootstrap_servers}")
    for change in changes:
        style = (
            "green"
            if change.kind == "created"
            else ("yellow" if change.kind != "unchanged" else "dim")
        )
        table.add_row(change.topic, f"[{style}]{change.kind}[/{style}]", change.detail)
    out.print(table)
    changed = sum(1 for c in changes if c.kind != "unchanged")
    out.print(f"{len(changes)} topic(s) in the catalog, {changed} changed")


@app.command("manifests")
@handle_errors
def manifests(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write into.")] = Path(
        "strimzi/topics"
    ),
    cluster: Annotated[
        str, typer.Option(help="Value of the strimzi.io/cluster label.")
    ] = "bar-kafka",
    replicas: Annotated[int, typer.Option(help="spec.replicas of every topic.")] = 3,
    min_insync: Annotated[int, typer.Option(help="min.insync.replicas of every topic.")] = 2,
) -> None:
    """Write a Strimzi KafkaTopic (kafka.strimzi.io/v1) per catalog topic, plus kustomization.yaml.

    Example: buildkit topics manifests --out strimzi/topics --cluster my-cluster
    """
    from buildkit.catalog import default_catalog
    from buildkit.manifests import write_manifests

    paths = write_manifests(
        default_catalog(), out_dir, cluster=cluster, replicas=replicas, min_insync=min_insync
    )
    out.print(f"wrote {len(paths)} file(s) to {out_dir}")


@app.command("list")
@handle_errors
def list_topics() -> None:
    """Every catalog topic: its contract, partitions, and whether and how it exists on the broker.

    Example: buildkit topics list
    """
    from buildkit.catalog import default_catalog
    from buildkit.kafka import admin_client, cluster_metadata

    settings = load_settings()
    md = cluster_metadata(admin_client(settings), settings)
    table = Table(
        "topic",
        "value",
        "partitions",
        "cleanup",
        "on broker",
        title=f"catalog · {settings.bootstrap_servers}",
    )
    for spec in default_catalog():
        on_broker = md.topics.get(spec.name)
        state = (
            "[red]missing[/red]"
            if on_broker is None
            else f"{len(on_broker.partitions)} partition(s)"
        )
        value = spec.value_type.__name__ if spec.value_type else "raw bytes"
        table.add_row(spec.name, value, str(spec.partitions), spec.cleanup_policy, state)
    out.print(table)
    extra = sorted(t for t in md.topics if t not in default_catalog() and not t.startswith("__"))
    if extra:
        out.print(f"not in the catalog: {', '.join(extra)}")


@app.command("describe")
@handle_errors
def describe(name: Annotated[str, typer.Argument(help="Topic name.")]) -> None:
    """Partitions with low/high offsets, configs and consumer-group lag of one topic.

    On brokers whose high watermark trails the last offset (the embedded Tansu),
    the high offset and the lag are lower bounds.

    Example: buildkit topics describe bar.tasks.results
    """
    from buildkit.topics import describe_topic

    settings = load_settings()
    desc = describe_topic(settings, name)
    table = Table("partition", "low", "high", title=name)
    for p in desc.partitions:
        table.add_row(str(p.partition), str(p.low), str(p.high))
    out.print(table)
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in sorted(desc.config.items())))
    if desc.groups:
        groups = Table("group", "committed", "lag (≥)", title="consumer groups")
        for g in desc.groups:
            committed = ", ".join(f"{p}:{o}" for p, o in sorted(g.committed.items()))
            groups.add_row(g.group, committed, str(g.total))
        out.print(groups)
    else:
        out.print("no consumer group has committed offsets on this topic")
