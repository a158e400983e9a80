"""Every topic the service uses, with its partition count, created by us before any client runs.

Tansu auto-creates a topic on the first metadata request with its own default partition count,
so nothing may touch a topic before ``streams.kafka.cluster.ensure_cluster`` has created it.
"""

from __future__ import annotations

from typing import Any

import msgspec

# journal envelopes (partition = murmur2 of the global id: normalised and exact-deduplicated in
# one hop) and gateways (keyed channel:order_no, or not keyed: re-keyed once via orders.canonical)
RAW = "orders.raw"
# VIP / urgent orders from the HTTP door: an agent of its own, so a flood queued on orders.raw
# does not delay them; from there on they go first in every envelope.
RAW_PRIORITY = "orders.raw.priority"
CANONICAL = "orders.canonical"  # gateway orders re-keyed: partition = kafka_partition(global id)
RECIPIENT = "orders.recipient"  # past exact dedup; partition = route key (city, amount, SKUs)
# new orders' (recipient key, id, created_at), off the critical path; partition = recipient key
HISTORY = "orders.history"
RECIPIENT_COUNTS = "orders.recipient_counts"  # counts the rules wait for; partition = global id
UNIQUE = "orders.unique"  # orders with their dedup verdict; partition = global id
REVIEW = "orders.review"  # suspected near-duplicates held for an operator; key = global id
RESERVE = "reservations.requests"  # one request per order line; partition = SKU
RESERVED = "reservations.results"  # the SKU partitions' answers; partition = global id
STOCK_UPDATES = "stock.updates"  # a WMS's stock adjustments (JSON / NDJSON); key = SKU
STOCK_CHANGES = "stock.changes"  # every touched (SKU, warehouse) level, and low-stock alerts
EVENTS = "orders.events"  # order events (payment, warehouse, carrier, ...): JSON; key = order id
ALERTS = "orders.alerts"  # SLA breaches/escalations, rule notifications, carrier exceptions
DLQ = "orders.dlq"  # dead letters with stage, field, reason and the original bytes
CHANGES = "orders.changes"  # every recorded change of an order, for sync and benchmarks
SETTLED = "ingest.settled"  # journal seqs that reached a terminal stage; the journal trims them
EPOCH = "orderstream.epoch"  # one marker record per broker lifetime
# Many nodes, one service: each node's record (where its API is, which partitions its workers
# hold), and the cluster-wide configuration (API keys, channel secrets and APIs, webhooks).
MEMBERS = "orderstream.members"
CONFIG = "orderstream.config"


class TopicSpec(msgspec.Struct, frozen=True):
    name: str
    partitions: int
    configs: dict[str, str] = {}
    replication: int = 1


def hot_topics() -> tuple[str, ...]:
    return (
        RAW,
        RAW_PRIORITY,
        CANONICAL,
        RECIPIENT,
        UNIQUE,
        HISTORY,
        RECIPIENT_COUNTS,
        REVIEW,
        RESERVE,
        RESERVED,
        STOCK_UPDATES,
        STOCK_CHANGES,
        EVENTS,
        ALERTS,
        DLQ,
        CHANGES,
    )


def consumed_topics() -> tuple[str, ...]:
    """The topics the workers' consumer group reads (its lag is reported per topic)."""
    return (
        RAW,
        RAW_PRIORITY,
        CANONICAL,
        RECIPIENT,
        UNIQUE,
        HISTORY,
        RECIPIENT_COUNTS,
        RESERVE,
        RESERVED,
        STOCK_UPDATES,
        EVENTS,
        DLQ,
    )


def changelog_topic(store: str) -> str:
    return f"orderstream.store.{store}.changelog"


STORES = ("seen", "recipients", "history", "orders", "stock", "dead_letters")


def all_topics(partitions: int, app_id: str, replication: int = 1) -> list[TopicSpec]:
    """Every topic with its count; ``replication`` > 1 on a cluster (with acks=all and, from 3
    replicas, min.insync.replicas=2: an acknowledged write survives one broker's loss)."""
    specs = _topics(partitions, app_id)
    if replication == 1:
        return specs
    durable = {"min.insync.replicas": "2"} if replication >= 3 else {}
    return [TopicSpec(t.name, t.partitions, {**t.configs, **durable}, replication) for t in specs]


def service_topics(settings: Any) -> list[TopicSpec]:
    """The topics of a service with these settings (partitions, app id, replication)."""
    return all_topics(settings.partitions, settings.app_id, settings.replication_factor)


def _topics(partitions: int, app_id: str) -> list[TopicSpec]:
    specs = [TopicSpec(name, partitions) for name in hot_topics()]
    specs += [TopicSpec(changelog_topic(s), partitions, {"retention.ms": "-1"}) for s in STORES]
    specs += [
        TopicSpec(SETTLED, 1),
        # On a real cluster a default 7-day retention would delete the marker and fake a new
        # epoch; changelogs must keep every update a takeover may need to replay.
        TopicSpec(EPOCH, 1, {"retention.ms": "-1"}),
        # the last record per key is what counts: compacted, never deleted by age
        TopicSpec(MEMBERS, 1, {"cleanup.policy": "compact", "retention.ms": "-1"}),
        TopicSpec(CONFIG, 1, {"cleanup.policy": "compact", "retention.ms": "-1"}),
        # Faust's assignor elects a leader through this topic; declaring it ourselves keeps
        # Tansu from auto-creating it with the wrong count.
        TopicSpec(f"{app_id}-__assignor-__leader", 1),
    ]
    return specs
