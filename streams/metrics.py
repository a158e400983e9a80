"""Prometheus metrics, shared by the API process and every worker process.

`serve` runs the HTTP API and the Faust workers as separate processes; prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor before any child starts) lets
the API's ``/metrics`` expose the sum over all of them. Labels are bounded: channel, stage,
reason class — never order ids or raw SKUs.
"""

from __future__ import annotations

import os
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

INGESTED = Counter(
    "orderstream_ingested_total", "Orders accepted for processing", ["channel", "transport"]
)
HTTP_REFUSED = Counter(
    "orderstream_http_refused_total", "Ingest requests or lines refused at the door", ["reason"]
)
NORMALISED = Counter("orderstream_normalised_total", "Orders normalised", ["channel"])
DEAD_LETTERS = Counter(
    "orderstream_dead_letters_total", "Records sent to orders.dlq", ["stage", "channel"]
)
RECORDED = Counter(
    "orderstream_orders_recorded_total", "Order changes recorded by the order stage", ["kind"]
)
DUPLICATES = Counter(
    "orderstream_duplicates_total",
    "Duplicate copies recorded (exact_channel, exact_cross_channel) and suspected near-duplicates"
    " held for review (near_duplicate)",
    ["rule", "channel"],
)
WINDOW_PRUNED = Counter(
    "orderstream_dedup_window_pruned_total", "Near-duplicate window entries pruned as they aged"
)
UNCOMPARABLE = Counter(
    "orderstream_dedup_uncomparable_total",
    "New orders whose recipient shows no name or phone (encrypted or absent): a near-duplicate"
    " of them can only be recognised by address",
)
HISTORY_FACTS = Counter(
    "orderstream_history_facts_total",
    "New orders counted into their recipient's 24 h history by the history stage",
)
HISTORY_COUNTS_SENT = Counter(
    "orderstream_history_counts_total",
    "Recipient counts at or above the smallest rule threshold, sent to the order stage",
)
HISTORY_COUNTS_APPLIED = Counter(
    "orderstream_history_counts_applied_total",
    "Recipient counts taken by the order stage: to a recorded order, or kept pending until the"
    " order is created",
    ["order"],
)
RESERVATIONS = Counter(
    "orderstream_reservations_total",
    "Reservation requests answered by the SKU partitions, by outcome",
    ["outcome"],
)
RESERVATIONS_PURGED = Counter(
    "orderstream_reservations_purged_total",
    "Ended reservations dropped from the ledger after reservation_retention_s",
)
CHANGES_RESENT = Counter(
    "orderstream_changes_resent_total",
    "Messages of order/stock changes sent again: the sync hub had not read them when the"
    " embedded broker's epoch ended",
)
RESERVATION_RESENDS = Counter(
    "orderstream_reservation_resends_total",
    "Reservation requests sent again: sent in an earlier broker epoch (lost with it) or"
    " unanswered for 10 minutes",
)
ORDER_RESERVATIONS = Counter(
    "orderstream_order_reservations_total",
    "Orders whose reservation reached a status (reserved, out_of_stock, released, deducted)",
    ["status"],
)
STOCK_ADJUSTMENTS = Counter(
    "orderstream_stock_adjustments_total",
    "Stock adjustments (HTTP, stock.updates): applied, refused (would oversell), duplicate",
    ["outcome"],
)
OVERSOLD = Counter(
    "orderstream_oversold_total", "Stock levels found with reserved > on_hand - safety: must be 0"
)
STOCK_ALERTS = Counter(
    "orderstream_stock_alerts_total", "Times a SKU's available stock fell to its alert threshold"
)
ALERTS = Counter("orderstream_alerts_total", "Alerts published on orders.alerts", ["kind"])
SLA_BREACHES = Counter(
    "orderstream_sla_breaches_total",
    "SLA breaches (level 0) and escalations (level n) by timer and state",
    ["timer", "state", "level"],
)
TRANSITIONS = Counter(
    "orderstream_state_transitions_total", "Orders moved into a state by an event", ["state"]
)
EVENTS_APPLIED = Counter(
    "orderstream_events_applied_total",
    "Order events applied (HTTP, orders.events, timers), by event; review decisions are"
    " review_approve / review_reject",
    ["event"],
)
EVENTS_REFUSED = Counter(
    "orderstream_events_refused_total",
    "Order events not applied: refused (409 / dead letter) or stale (already past)",
    ["reason"],
)
TIMER_LATENESS = Histogram(
    "orderstream_sla_timer_lateness_seconds",
    "How late an SLA deadline fired after it was due",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
RULE_RELOADS = Counter(
    "orderstream_rules_reloads_total",
    "Rules file reloads, ok or invalid (kept the old)",
    ["result"],
)
IMPORTED = Counter(
    "orderstream_import_orders_total",
    "Orders read from imported export files, by what they were to orderstream (missing: now"
    " ingested; known: a copy, nothing added; newer: an update; rejected: a bad row, dead-lettered;"
    " unchecked: admitted while no worker owned the partition)",
    ["channel", "outcome"],
)
MEMORY_BUDGET = Gauge(
    "orderstream_memory_budget_bytes",
    "The memory budget the service keeps the broker and workers within (0: none)",
    multiprocess_mode="max",
)
FLOW_BREAKS = Counter(
    "orderstream_flow_breaks_total",
    "Orders whose progress once stalled longer than flow_break_after (15 m) in a state the"
    " merchant's flow moves (paid, picking, held); counted once per order, at the late step",
)
MANUAL_INTERVENTIONS = Counter(
    "orderstream_manual_interventions_total",
    "Actions a person took on orders or stock: review decisions, manual events, stock"
    " corrections and sets, dead-letter replays",
    ["kind"],
)
SHIPMENTS = Counter(
    "orderstream_shipments_total",
    "Orders shipped, on time or not against the SLA policy's ship_within (from payment)",
    ["on_time"],
)
RECONCILE_RUNS = Counter(
    "orderstream_reconcile_runs_total",
    "Reconciliation passes against a channel's order API, by result (done, failed)",
    ["channel", "result"],
)
RECONCILE_ORDERS = Counter(
    "orderstream_reconcile_orders_total",
    "Orders a reconciliation fetched, and what they were: missing (webhooks missed them: now"
    " ingested), newer (held order updated), different (not newer, yet amount/status/lines"
    " differ), unknown (held, not listed by the channel), rejected, unchecked",
    ["channel", "outcome"],
)
RECONCILE_ERRORS = Counter(
    "orderstream_reconcile_errors_total",
    "Reconciliation passes that failed (the channel refused, or could not be reached)",
    ["channel"],
)
RECONCILE_LAST_SUCCESS = Gauge(
    "orderstream_reconcile_last_success_timestamp_seconds",
    "When the channel's last reconciliation pass finished successfully (unix seconds)",
    ["channel"],
    multiprocess_mode="max",
)
FORWARDED = Counter("orderstream_journal_forwarded_total", "Journal entries sent to the broker")
JOURNAL_DEPTH = Gauge(
    "orderstream_journal_depth",
    "Accepted orders not yet recorded by a terminal stage",
    multiprocess_mode="livesum",
)
FORWARD_SECONDS = Histogram(
    "orderstream_journal_forward_seconds", "Time to forward one journal read to the broker"
)
ENVELOPE_SECONDS = Histogram(
    "orderstream_stage_envelope_seconds", "Time a stage spends on one envelope", ["stage"]
)
E2E_SECONDS = Histogram(
    "orderstream_end_to_end_seconds",
    "Accepted at the door until the order stage recorded it, by lane (normal, priority)",
    ["lane"],
    buckets=LATENCY_BUCKETS,
)
CHANGE_PUBLISHED = Histogram(
    "orderstream_change_published_seconds",
    "Accepted at the door until the change reached the sync hub, ready for subscribers and"
    " webhooks; by lane and change kind (created, updated, duplicate_received, reservation)",
    ["lane", "kind"],
    buckets=LATENCY_BUCKETS,
)
SYNC_EVENTS = Counter(
    "orderstream_sync_events_total",
    "Changes published to subscribers, by type (order, stock, stock_alert)",
    ["type"],
)
STOCK_BELOW_SAFETY = Gauge(
    "orderstream_stock_below_safety",
    "SKU x warehouse levels whose available stock is at or below their alert threshold",
    multiprocess_mode="livemax",
)
SUBSCRIBERS = Gauge(
    "orderstream_subscribers",
    "Live stream subscribers, by transport (sse, websocket)",
    ["transport"],
    multiprocess_mode="livesum",
)
SUBSCRIBER_DROPS = Counter(
    "orderstream_subscriber_drops_total",
    "Subscribers disconnected by orderstream: lagging (too far behind the head) or"
    " write_timeout (not reading at all)",
    ["transport", "reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "orderstream_webhook_deliveries_total",
    "Webhook delivery attempts: delivered (2xx), failed (retried later), dead_lettered (gave up)",
    ["outcome"],
)
WEBHOOK_BACKLOG = Gauge(
    "orderstream_webhook_backlog_events",
    "Sync events not yet delivered to (or skipped by) webhooks, summed over endpoints",
    multiprocess_mode="livemax",
)
CONSUMER_LAG = Gauge(
    "orderstream_consumer_lag",
    "Messages (envelopes) behind the topic's end, by consumer group and topic; group 'sync' is"
    " the sync hub",
    ["group", "topic"],
    multiprocess_mode="livemax",
)
AUTH_FAILURES = Counter(
    "orderstream_auth_failures_total",
    "Requests refused for their credential (401/403), by reason: missing, malformed, unknown,"
    " wrong, expired, scope, channel, bad_signature",
    ["reason"],
)
PROCESS_RSS = Gauge(
    "orderstream_process_resident_bytes",
    "Resident memory of the service's processes by role (api, broker, workers summed)",
    ["role"],
    multiprocess_mode="livemax",
)
BROKER_REPLACEMENTS = Counter(
    "orderstream_broker_replacements_total",
    "Processes replaced on purpose to stay within the memory budget: the embedded broker"
    " (memory_budget) or a worker (worker_memory)",
    ["reason"],
)
BROKER_EPOCHS = Counter("orderstream_broker_epochs_total", "Fresh broker epochs recovered from")
BROKER_SWAP_DRAIN = Histogram(
    "orderstream_broker_swap_drain_seconds",
    "Broker swaps without a pause: from the door switching to the next broker until the old"
    " broker's workers were done (what the next broker's first records waited)",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


def lane_of(priority: str) -> str:
    """The ``lane`` label of an order's latency: its record's priority ("high" = priority)."""
    return "priority" if priority == "high" else "normal"


def observe_many(histogram: Histogram, values: list[float]) -> None:
    """Observe a batch with one write per bucket rather than one per value.

    In multiprocess mode every observe() touches mmap'd files (~3 µs); an envelope of 500
    orders would spend 1.5 ms on its latency histogram alone.
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bound >= v; the last is +Inf
    for i, n in enumerate(counts):
        if n:
            histogram._buckets[i].inc(n)
    histogram._sum.inc(sum(values))


def reap(pid: int) -> None:
    """A child process exited: fold its counters and histograms into one archive file per
    type and drop its live gauges.

    prometheus-client keeps one set of files per process id for ever; the memory budget
    restarts a worker every few minutes in a long flood, so without this the directory (and
    the time each scrape takes to read it) would grow without end. Call it on the thread that
    serves /metrics: a scrape between the fold and the removal would count the child twice.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    mark_process_dead(pid, path)
    for kind in ("counter", "histogram"):
        dead = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = MmapedDict(os.path.join(path, f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                archive.write_value(key, archive.read_value(key)[0] + value, timestamp)
        finally:
            archive.close()
        os.remove(dead)


def exposition() -> tuple[bytes, str]:
    """Text for /metrics: all processes when multiprocess mode is on, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
