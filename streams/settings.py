"""One typed settings object, read once at start-up: TOML file < environment < CLI flags.

Every key is validated here with a message naming the key, so a typo fails at start-up instead of
surfacing as a strange runtime error an hour into a flood.
"""

from __future__ import annotations

import os
import socket
import tomllib
import typing
from pathlib import Path
from typing import Any

import msgspec

from core.model import Limits
from core.reconcile import parse_duration_ms

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Broker: "" runs the embedded Tansu broker on loopback; "kafka://host:9092" uses a cluster.
    broker: str = ""
    broker_port: int = 19092  # embedded broker's loopback port
    app_id: str = "orderstream"
    # Every hot topic has the same count so partition-local state lines up. One per worker here:
    # each stage splits its output over all partitions, so envelopes shrink by this factor per
    # hop. Measured at 2,400 orders/s: p50 0.6 s with 2, 5.7 s (falling behind) with 4.
    partitions: int = 2
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    data_dir: str = "./data"
    workers: int = 2  # Faust worker processes started by `serve`: one per core here
    # first worker's internal web port; 0 picks free ports. A broker swap runs a second set of
    # workers beside the first for a few seconds: they take the next `workers` ports.
    worker_web_port: int = 0
    sku_aliases: str = ""  # TOML alias table; "" = the shipped config/skus.toml, "none" = none
    default_country: str = "CN"  # phone fallback when neither payload nor channel names one
    # Ingest journal: accepted orders live here until the order stage has recorded them.
    journal_max_entries: int = 2_000_000
    journal_fsync: bool = True  # group commit: one fsync per batch of concurrent requests
    retry_after_s: int = 2  # told to clients when the journal is full
    max_body_bytes: int = 64 * 1024 * 1024
    # An uploaded export file (POST /v1/imports) streams to disk; it may be this large.
    import_max_bytes: int = 2 * 1024 * 1024 * 1024
    # Reconciliation with the channels' order APIs (credentials: `orderstream keys channel-api`):
    # a pass per configured channel this often ("1h", "30m"; "" = only when asked).
    reconcile_every: str = ""
    # The console's SLA lights: red when an order not yet picked has less than this many hours
    # left before its ship-by time, yellow when one not yet shipped has less than this.
    sla_red_hours: float = 2.0
    sla_yellow_hours: float = 6.0
    # Envelopes: how many records one broker message carries and how long a forwarder waits.
    envelope_max_records: int = 500
    # A stage sleeps until the first record of a batch arrives, then gathers more for this long:
    # longer = fewer, bigger batches (less CPU per order: each batch pays a produce, an ack and a
    # store commit per partition), shorter = less latency per hop.
    batch_window_ms: float = 5.0
    # Flow control: orders forwarded to the broker and not yet recorded, at most. The journal
    # buffers the rest of a flood on disk; the broker (memory-only when embedded) never holds
    # more than this window, and the stages are never handed more than they can chew.
    forward_window: int = 50_000
    forward_linger_ms: int = 5
    # Producer compression: the broker keeps batches as sent, so this also bounds its memory.
    # zstd measured fastest here (1.0 ms per 300-order envelope vs gzip 2.6, lz4 1.8, none 2.2).
    compression: str = "zstd"
    # Faust against Tansu: Tansu holds JoinGroup for half the session timeout, so the default
    # 60 s means 30 s to start. 8 s / 2 s starts in ~6.5 s and still rides out a GC or fsync
    # stall of several seconds without a rebalance (6 s / 1 s starts in ~5 s, less margin).
    session_timeout_s: float = 8.0
    heartbeat_interval_s: float = 2.0
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line, for log shippers
    # Changelog every partition-store commit to the broker, so a worker on another machine can
    # rebuild a partition it takes over. "auto": on with an external cluster; off with the
    # embedded broker, where every worker shares this machine's data/stores (the local RocksDB
    # is the truth) and the broker keeps topics only in memory anyway. "on" / "off" force it.
    store_changelog: str = "auto"
    # Near-duplicates: same recipient, amount and SKU multiset placed within this many seconds
    # (order created_at) are held for review rather than fulfilled twice.
    near_duplicate_window_s: float = 180.0
    # How long (wall time) past the window an order stays checkable against later arrivals:
    # covers gateways delivering late. Window entries are kept window + grace, then pruned.
    near_duplicate_grace_s: float = 120.0
    # Warehouse routing table (TOML, see config/warehouses.toml); "" = the shipped example.
    warehouses: str = ""
    # A reservation not released or shipped within this many seconds is released; 0 = never.
    reservation_ttl_s: float = 0.0
    # Ended reservations (released, shipped, refused) stay in the ledger this long so a
    # redelivered request is recognised, then are purged: the SKU partitions hold the orders of
    # this window, not of all time. 0 = keep forever.
    reservation_retention_s: float = 7 * 86400.0
    # A SKU with no stock record in any warehouse: "allow" = not stock-managed here (granted,
    # never counted), "refuse" = every SKU must be stocked (such orders go out of stock).
    untracked_skus: str = "allow"
    # SLA timers and merchant rules (TOML); "" = the shipped config/sla.toml, config/rules.toml.
    # The rules file is re-read when it changes; an invalid edit keeps the rules in force.
    sla_policy: str = ""
    rules: str = ""
    sla_tick_s: float = 1.0  # how often a worker scans its deadline index for due timers
    # Orders tagged with any of these (or sent with X-Priority: high) take the priority lane.
    priority_tags: list[str] = msgspec.field(default_factory=lambda: ["vip", "urgent"])

    # Sync hub (SSE, WebSocket, webhooks): the newest changes stay in memory for live readers,
    # this many on disk for resume (Last-Event-ID) and webhooks that fell behind.
    sync_memory_events: int = 50_000
    sync_retention_events: int = 2_000_000
    # A subscriber further behind than this, or stuck in one write this long, is dropped.
    subscriber_max_lag: int = 100_000
    subscriber_write_timeout_s: float = 10.0
    # Webhooks: events per POST, per-attempt timeout, attempts before a batch is dead-lettered,
    # first retry delay (doubling, with jitter) and its cap.
    webhook_batch_max: int = 2000
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 0.25
    webhook_backoff_max_s: float = 60.0

    # Authentication: "on" = every /v1 endpoint needs an API key (or a channel's HMAC signature);
    # keys live in <data_dir>/auth/keys.json, managed with `orderstream keys`. "off" only for
    # a closed test bench.
    auth: str = "on"
    # Serve /metrics (without credentials) on its own port for the scraper; 0 = only on the API
    # port, where it needs a read key.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Memory budget (MiB) for the whole service (API, workers, embedded broker; RSS). The
    # embedded broker keeps every message in memory and never trims, so past the budget the
    # supervisor drains the pipeline and replaces the broker with an empty one (the journal and
    # the stores are the truth). 0 = no budget.
    memory_budget_mb: int = 0
    # RocksDB memory per process (memtables + block cache with indexes and filters), shared by
    # all its stores: bounds a worker's stores to this whatever their number or size.
    rocksdb_memory_mb: int = 64
    # An external cluster's security (passed to every Kafka client, the workers' included):
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL mechanism PLAIN, SCRAM-SHA-256 or
    # SCRAM-SHA-512. Give the password through ORDERSTREAM_KAFKA_SASL_PASSWORD, not a file.
    # Replicas per topic orderstream creates on an external cluster (3 in production: with
    # acks=all and min.insync.replicas=2, set for 3+, an acknowledged order survives a broker).
    replication_factor: int = 1
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""

    # Hostile input (core.model.Limits has the same defaults). A request over max_body_bytes or
    # with more than max_batch_lines NDJSON lines is refused whole (413); an order over
    # max_order_bytes is refused at the door (400 / its batch line, and a dead letter); more
    # line items or longer text fields than these dead-letter the order in normalise.
    max_batch_lines: int = 5000
    max_order_bytes: int = 256 * 1024
    max_order_lines: int = 500
    max_string_chars: int = 1000  # names, address parts, SKUs, titles, statuses, tags
    max_note_chars: int = 5000  # the buyer's note / message

    # Many nodes, one service (an external cluster only; each node is one `orderstream serve`).
    # node_id names this node in the cluster ("" = host:http_port); advertised_url is where
    # the other nodes reach this node's HTTP API ("" = http://<http_host or host name>:<port>).
    node_id: str = ""
    advertised_url: str = ""
    # Shared by the nodes to call each other (forwarded reads and writes, scatter-gather
    # queries). "" = one generated by the first node and kept in the cluster's config topic:
    # anyone who can read that topic can call the nodes' internal routes, so on a cluster whose
    # topics others may read, set it (ORDERSTREAM_CLUSTER_SECRET) on every node.
    cluster_secret: str = ""

    def __post_init__(self) -> None:
        checks = [
            (self.partitions >= 1, "partitions", "must be >= 1"),
            (self.workers >= 1, "workers", "must be >= 1"),
            (0 < self.http_port < 65536, "http_port", "must be a TCP port"),
            (0 < self.broker_port < 65536, "broker_port", "must be a TCP port"),
            (self.journal_max_entries >= 1, "journal_max_entries", "must be >= 1"),
            (self.rocksdb_memory_mb >= 8, "rocksdb_memory_mb", "must be >= 8"),
            (
                0 < self.near_duplicate_window_s <= 86400,
                "near_duplicate_window_s",
                "must be > 0 and at most a day (86400)",
            ),
            (
                0 <= self.near_duplicate_grace_s <= 86400,
                "near_duplicate_grace_s",
                "must be 0..86400 seconds",
            ),
            (1 <= self.envelope_max_records <= 2000, "envelope_max_records", "must be 1..2000"),
            (0 <= self.batch_window_ms <= 1000, "batch_window_ms", "must be 0..1000 ms"),
            (self.forward_window >= 1000, "forward_window", "must be >= 1000"),
            (
                self.compression in ("gzip", "none", "lz4", "zstd", "snappy"),
                "compression",
                "must be gzip, lz4, zstd, snappy or none",
            ),
            (
                self.broker == "" or self.broker.startswith("kafka://"),
                "broker",
                "must be empty (embedded) or kafka://host:port[,host:port]",
            ),
            (
                self.log_level in ("debug", "info", "warn", "error"),
                "log_level",
                "must be debug, info, warn or error",
            ),
            (self.log_format in ("text", "json"), "log_format", "must be text or json"),
            (
                self.sku_aliases in ("", "none") or Path(self.sku_aliases).is_file(),
                "sku_aliases",
                f"no such file: {self.sku_aliases} (relative paths are from the working directory)",
            ),
            (
                self.warehouses == "" or Path(self.warehouses).is_file(),
                "warehouses",
                f"no such file: {self.warehouses} (relative paths are from the working directory)",
            ),
            (self.reservation_ttl_s >= 0, "reservation_ttl_s", "must be >= 0 (0 = no TTL)"),
            (
                self.reservation_retention_s == 0 or self.reservation_retention_s >= 60,
                "reservation_retention_s",
                "must be 0 (keep forever) or at least 60 seconds",
            ),
            (
                self.store_changelog in ("auto", "on", "off"),
                "store_changelog",
                "must be auto, on or off",
            ),
            (
                self.untracked_skus in ("allow", "refuse"),
                "untracked_skus",
                "must be allow or refuse",
            ),
            (0.05 <= self.sla_tick_s <= 60, "sla_tick_s", "must be 0.05..60 seconds"),
            (
                self.sla_policy == "" or Path(self.sla_policy).is_file(),
                "sla_policy",
                f"no such file: {self.sla_policy}",
            ),
            (
                self.rules == "" or Path(self.rules).is_file(),
                "rules",
                f"no such file: {self.rules}",
            ),
            (self.auth in ("on", "off"), "auth", "must be on or off"),
            (0 <= self.metrics_port < 65536, "metrics_port", "must be a TCP port or 0"),
            (
                self.kafka_security_protocol in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                "kafka_security_protocol",
                "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            ),
            (
                self.kafka_security_protocol == "PLAINTEXT" or self.broker != "",
                "kafka_security_protocol",
                "applies to an external cluster (--broker); the embedded broker is plain text",
            ),
            (
                self.kafka_sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                "kafka_sasl_mechanism",
                "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ),
            (
                not self.kafka_security_protocol.startswith("SASL")
                or bool(self.kafka_sasl_username and self.kafka_sasl_password),
                "kafka_sasl_username",
                "SASL needs kafka_sasl_username and kafka_sasl_password",
            ),
            (
                self.memory_budget_mb == 0 or self.memory_budget_mb >= 256,
                "memory_budget_mb",
                "must be 0 (none) or >= 256",
            ),
            (self.sync_memory_events >= 1000, "sync_memory_events", "must be >= 1000"),
            (
                self.sync_retention_events >= self.sync_memory_events,
                "sync_retention_events",
                "must be >= sync_memory_events",
            ),
            (self.subscriber_max_lag >= 100, "subscriber_max_lag", "must be >= 100"),
            (
                self.subscriber_write_timeout_s > 0,
                "subscriber_write_timeout_s",
                "must be > 0",
            ),
            (1 <= self.webhook_batch_max <= 5000, "webhook_batch_max", "must be 1..5000"),
            (self.webhook_timeout_s > 0, "webhook_timeout_s", "must be > 0"),
            (self.webhook_max_attempts >= 1, "webhook_max_attempts", "must be >= 1"),
            (
                0 < self.webhook_backoff_s <= self.webhook_backoff_max_s,
                "webhook_backoff_s",
                "must be > 0 and <= webhook_backoff_max_s",
            ),
            (
                self.heartbeat_interval_s * 3 <= self.session_timeout_s,
                "heartbeat_interval_s",
                "must be at most a third of session_timeout_s",
            ),
            (self.max_body_bytes >= 4096, "max_body_bytes", "must be >= 4096"),
            (1 <= self.max_batch_lines <= 100_000, "max_batch_lines", "must be 1..100000"),
            (
                1024 <= self.max_order_bytes <= min(self.max_body_bytes, 3 * 1024 * 1024),
                "max_order_bytes",
                "must be >= 1024 and <= max_body_bytes and 3 MiB (one order fits a message)",
            ),
            (1 <= self.max_order_lines <= 100_000, "max_order_lines", "must be 1..100000"),
            (64 <= self.max_string_chars <= 1_000_000, "max_string_chars", "must be 64..1000000"),
            (
                self.max_string_chars <= self.max_note_chars <= 1_000_000,
                "max_note_chars",
                "must be max_string_chars..1000000",
            ),
        ]
        for ok, key, why in checks:
            if not ok:
                raise SettingsError(f"config key '{key}': {why}")
        if self.reconcile_every:
            try:
                every = parse_duration_ms(self.reconcile_every)
            except ValueError as exc:
                raise SettingsError(f"config key 'reconcile_every': {exc}") from None
            if every < 10_000:
                raise SettingsError("config key 'reconcile_every': at least 10s")

    @property
    def reconcile_every_s(self) -> float:
        return parse_duration_ms(self.reconcile_every) / 1000 if self.reconcile_every else 0.0

    @property
    def limits(self) -> Limits:
        """The per-order and per-request bounds, for the door and the normaliser."""
        return Limits(
            max_batch_lines=self.max_batch_lines,
            max_order_bytes=self.max_order_bytes,
            max_order_lines=self.max_order_lines,
            max_string_chars=self.max_string_chars,
            max_note_chars=self.max_note_chars,
        )

    @property
    def changelog_enabled(self) -> bool:
        return self.store_changelog == "on" or (
            self.store_changelog == "auto" and not self.embedded
        )

    @property
    def embedded(self) -> bool:
        return self.broker == ""

    @property
    def clustered(self) -> bool:
        """Nodes on an external cluster find each other; the embedded broker is one machine."""
        return not self.embedded

    @property
    def node_name(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{self.http_port}"

    @property
    def node_url(self) -> str:
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = self.http_host if self.http_host not in ("0.0.0.0", "::", "") else None
        return f"http://{host or socket.gethostname()}:{self.http_port}"

    @property
    def broker_url(self) -> str:
        return self.broker or f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def bootstrap_servers(self) -> str:
        return self.broker_url.removeprefix("kafka://")

    @property
    def sku_aliases_path(self) -> Path | None:
        if self.sku_aliases == "none":
            return None
        return Path(self.sku_aliases) if self.sku_aliases else CONFIG_DIR / "skus.toml"

    @property
    def sla_path(self) -> Path:
        return Path(self.sla_policy) if self.sla_policy else CONFIG_DIR / "sla.toml"

    @property
    def rules_path(self) -> Path:
        return Path(self.rules) if self.rules else CONFIG_DIR / "rules.toml"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()


class SettingsError(ValueError):
    """A configuration problem, named by key."""


_ENV_PREFIX = "ORDERSTREAM_"


def load_settings(
    config_file: str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """TOML file, then ORDERSTREAM_<KEY> environment variables, then explicit overrides."""
    raw: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            raw.update(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
    fields = {f.name: f.type for f in msgspec.structs.fields(Settings)}
    for name in fields:
        env = os.environ.get(_ENV_PREFIX + name.upper())
        if env is not None:
            # lists travel as comma-separated values (ORDERSTREAM_PRIORITY_TAGS=vip,urgent)
            is_list = typing.get_origin(fields[name]) is list
            raw[name] = [v.strip() for v in env.split(",") if v.strip()] if is_list else env
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        # str_values: environment variables are strings; msgspec converts "4" -> 4, "true" -> True
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if msg.startswith("config key"):
            raise SettingsError(msg) from None
        if " - at `$." in msg:
            why, _, where = msg.rpartition(" - at `$.")
            raise SettingsError(f"config key '{where.rstrip('`')}': {why}") from None
        raise SettingsError(f"config: {msg}") from None
