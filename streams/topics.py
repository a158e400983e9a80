"""Every topic the service uses, with its partition count, created by us before any client runs.

Tansu auto-creates a topic on the first metadata request with its own default partition count,
so nothing may touch a topic before ``streams.cluster.ensure_cluster`` has created it.
"""

from __future__ import annotations

import msgspec

RAW = "orders.raw"  # gateways and the ingest journal; key channel:order_no
CANONICAL = "orders.canonical"  # normalised orders; partition = kafka_partition(global id)
DLQ = "orders.dlq"  # dead letters with stage, field, reason and the original bytes
CHANGES = "orders.changes"  # every recorded change of an order, for sync and benchmarks
SETTLED = "ingest.settled"  # journal seqs that reached a terminal stage; the journal trims them
EPOCH = "orderstream.epoch"  # one marker record per broker lifetime


class TopicSpec(msgspec.Struct, frozen=True):
    name: str
    partitions: int


def hot_topics() -> tuple[str, ...]:
    return (RAW, CANONICAL, DLQ, CHANGES)


def changelog_topic(store: str) -> str:
    return f"orderstream.store.{store}.changelog"


STORES = ("orders", "dead_letters")


def all_topics(partitions: int, app_id: str) -> list[TopicSpec]:
    specs = [TopicSpec(name, partitions) for name in hot_topics()]
    specs += [TopicSpec(changelog_topic(s), partitions) for s in STORES]
    specs += [
        TopicSpec(SETTLED, 1),
        TopicSpec(EPOCH, 1),
        # Faust's assignor elects a leader through this topic; declaring it ourselves keeps
        # Tansu from auto-creating it with the wrong count.
        TopicSpec(f"{app_id}-__assignor-__leader", 1),
    ]
    return specs
