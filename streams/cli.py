"""``orderstream``: serve | worker | broker | keys | import | reconcile | audit-stock."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from streams import logs
from streams.process import malloc
from streams.settings import SettingsError, load_settings
from streams.state import rocks


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (keys as in streams/settings.py)")
    p.add_argument("--broker", help="kafka://host:port of an external cluster (default: embedded)")
    p.add_argument("--broker-port", type=int, help="embedded broker port (default 19092)")
    p.add_argument("--http-port", type=int, help="HTTP API port (default 8080)")
    p.add_argument("--data-dir", help="journal, stores and logs (default ./data)")
    p.add_argument("--partitions", type=int, help="partitions per hot topic (default 4)")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--sku-aliases", help="SKU alias table (TOML)")
    p.add_argument("--log-level", choices=["debug", "info", "warn", "error"])
    p.add_argument(
        "--log-format", choices=["text", "json"], help="text lines (default) or JSON per line"
    )


def _keys(args: argparse.Namespace) -> int:
    from streams.http import auth

    try:
        settings = load_settings(args.config, {"data_dir": args.data_dir, "broker": args.broker})
    except SettingsError as exc:
        print(f"orderstream: {exc}", file=sys.stderr)
        return 2
    if settings.clustered:
        # many nodes, one service: the cluster's configuration topic is the truth, and every
        # node has the change within seconds
        from streams.cluster.shared_config import ConfigUnavailable, edit_cluster_files

        try:
            return edit_cluster_files(settings, lambda keys, apis: _keys_on(args, keys, apis))
        except ConfigUnavailable as exc:
            print(f"orderstream: {exc}; nothing was changed", file=sys.stderr)
            return 1
    data = settings.data_path
    return _keys_on(args, auth.keys_path(data), auth.channel_api_path(data))


def _keys_on(args: argparse.Namespace, path: Path, apis_path: Path) -> int:
    """One ``keys`` command on a key file and a channel-API file."""
    from datetime import UTC, datetime

    from streams.http import auth

    if args.action == "add":
        scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
        channels = [x.strip() for x in args.channels.split(",") if x.strip()]
        try:
            token = auth.add_key(path, args.name, scopes, channels, args.expires_days)
        except ValueError as exc:
            print(f"orderstream: {exc}", file=sys.stderr)
            return 2
        print(token)
    elif args.action == "rotate":
        try:
            token = auth.rotate_key(path, args.name, args.grace_hours)
        except KeyError:
            print(f"orderstream: no key named {args.name!r}", file=sys.stderr)
            return 1
        print(token)
    elif args.action == "revoke":
        n = auth.revoke_key(path, args.name)
        print(f"revoked {n} key(s)")
        return 0 if n else 1
    elif args.action == "channel-api":
        from streams.reconcile.channels import CLIENTS, DEFAULT_BASE

        channel = args.channel.lower()
        if channel not in CLIENTS:
            print(f"orderstream: reconciliation pulls from {sorted(CLIENTS)}", file=sys.stderr)
            return 2
        fields = {}
        for item in args.set:
            name, eq, value = item.partition("=")
            if not eq or not name.strip():
                print(f"orderstream: --set {item!r}: expected NAME=VALUE", file=sys.stderr)
                return 2
            fields[name.strip()] = value
        base = args.base_url or DEFAULT_BASE[channel]
        api = auth.set_channel_api(apis_path, channel, base, fields)
        if not api.base_url:
            print(f"orderstream: {channel} needs --base-url (the shop's own host)", file=sys.stderr)
            return 2
        print(f"{channel}: {api.base_url}, credentials {sorted(api.fields)} (values not shown)")
    elif args.action == "channel-secret":
        if len(args.secret) < 16:
            print("orderstream: --secret must be at least 16 characters", file=sys.stderr)
            return 2
        auth.set_channel_secret(path, args.channel.lower(), args.secret, args.header)
        print(f"{args.channel}: requests with {args.header} are verified against the secret")
    else:
        for key in auth.load_keys(path).keys:
            expires = (
                datetime.fromtimestamp(key.expires_at / 1000, UTC).isoformat(timespec="seconds")
                if key.expires_at
                else "never"
            )
            channels = ",".join(key.channels) or "all channels"
            print(f"{key.name}\t{key.id}\t{','.join(key.scopes)}\t{channels}\texpires {expires}")
    return 0


def _audit_stock(url: str, api_key: str = "") -> int:
    import json
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url.rstrip("/") + "/v1/stock-audit", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            doc = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        print(f"orderstream: audit failed: {exc}", file=sys.stderr)
        return 2
    for line in doc["problems"]:
        print(line)
    verdict = "consistent" if doc["ok"] else f"{len(doc['problems'])} problem(s)"
    print(f"stock audit over partitions {doc['partitions']}: {verdict}")
    return 0 if doc["ok"] else 1


def _check_policies(settings: Any) -> str:
    """Load the SLA policy, rules and routing table once: a bad file stops start-up, named."""
    from core.config_check import ConfigInvalid
    from core.routing import RoutingConfigError, WarehouseRouting
    from core.rules import RuleSet
    from core.sla import SlaPolicy

    try:
        SlaPolicy.from_toml(settings.sla_path)
        RuleSet.from_toml(settings.rules_path)
        if settings.warehouses:
            WarehouseRouting.from_toml(settings.warehouses)
        else:
            WarehouseRouting.default()
    except (ConfigInvalid, RoutingConfigError, OSError) as exc:
        return str(exc)
    return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="orderstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _common(sub.add_parser("serve", help="broker (embedded unless --broker), API and workers"))
    w = sub.add_parser("worker", help="one Faust worker process (started by serve)")
    _common(w)
    w.add_argument("--web-port", type=int, required=True)
    w.add_argument(
        "--standby",
        action="store_true",
        help="the next broker's worker during a swap: keeps short fetch waits until work comes",
    )
    b = sub.add_parser("broker", help="run the embedded broker alone, long-lived")
    b.add_argument("--port", type=int, default=19092)
    a = sub.add_parser(
        "audit-stock",
        help="recompute stock from the reservation ledger of a running service; exit 1 on any"
        " discrepancy",
    )
    a.add_argument("--url", default="http://127.0.0.1:8080", help="the service's HTTP API")
    a.add_argument("--api-key", default=os.environ.get("ORDERSTREAM_API_KEY", ""))
    imp = sub.add_parser(
        "import",
        help="import a channel's order export (CSV, TSV or XLSX) through a running service",
    )
    imp.add_argument("file", help="the export as downloaded from the channel's back office")
    imp.add_argument("--channel", required=True, help="shopify, taobao (tmall), jd, pdd or amazon")
    imp.add_argument("--url", default="http://127.0.0.1:8080", help="the service's HTTP API")
    imp.add_argument("--api-key", default=os.environ.get("ORDERSTREAM_API_KEY", ""))
    imp.add_argument("--no-wait", action="store_true", help="upload, print the id and return")
    rec = sub.add_parser(
        "reconcile",
        help="pull a channel's orders updated in a window through a running service; report",
    )
    rec.add_argument("channel", help="shopify, tiktok, amazon or taobao")
    rec.add_argument("--since", default="", help="e.g. 2h, 30m, 1d (default: from the cursor)")
    rec.add_argument("--url", default="http://127.0.0.1:8080", help="the service's HTTP API")
    rec.add_argument("--api-key", default=os.environ.get("ORDERSTREAM_API_KEY", ""))
    k = sub.add_parser("keys", help="API keys and channel webhook secrets (applied live)")
    k.add_argument("--data-dir", help="the service's data dir (default ./data)")
    k.add_argument("--config", help="TOML settings file (for data_dir, broker)")
    k.add_argument(
        "--broker",
        help="kafka://host:port: change the cluster's keys (every node), not one data dir's",
    )
    ks = k.add_subparsers(dest="action", required=True)
    add = ks.add_parser("add", help="create a key; prints it once")
    add.add_argument("name")
    add.add_argument("--scopes", default="ingest", help="comma-separated: ingest, read, write")
    add.add_argument("--channels", default="", help="ingest only for these (default: all)")
    add.add_argument("--expires-days", type=float, default=0)
    rot = ks.add_parser("rotate", help="new key for NAME; the old one expires after --grace-hours")
    rot.add_argument("name")
    rot.add_argument("--grace-hours", type=float, default=24.0)
    rev = ks.add_parser("revoke", help="remove every key named NAME (or with that id) now")
    rev.add_argument("name")
    ks.add_parser("list", help="names, ids, scopes, channels, expiry (never secrets)")
    sec = ks.add_parser(
        "channel-secret", help="verify a channel's pushed webhooks by HMAC-SHA256 of the body"
    )
    sec.add_argument("channel")
    sec.add_argument("--secret", default=os.environ.get("ORDERSTREAM_CHANNEL_SECRET", ""))
    sec.add_argument("--header", default="X-Shopify-Hmac-Sha256")
    capi = ks.add_parser(
        "channel-api",
        help="where and how to call a channel's order API (reconciliation); --set name=value",
    )
    capi.add_argument("channel")
    capi.add_argument("--base-url", default="", help="e.g. https://myshop.myshopify.com")
    capi.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="shopify: access_token; tiktok: app_key, app_secret, access_token, shop_cipher;"
        " amazon: refresh_token, client_id, client_secret, marketplace_ids (lwa_url);"
        " taobao: app_key, app_secret, session",
    )
    args = parser.parse_args(argv)

    if args.command == "audit-stock":
        sys.exit(_audit_stock(args.url, args.api_key))
    if args.command == "keys":
        sys.exit(_keys(args))
    if args.command == "reconcile":
        from streams.reconcile.client import run_reconcile

        sys.exit(run_reconcile(args.url, args.api_key, args.channel.lower(), args.since))
    if args.command == "import":
        from pathlib import Path

        from streams.imports.client import run_import

        path = Path(args.file)
        if not path.is_file():
            print(f"orderstream: {path}: no such file", file=sys.stderr)
            sys.exit(2)
        sys.exit(run_import(args.url, args.api_key, args.channel.lower(), path, not args.no_wait))

    if args.command == "broker":
        logs.configure("info")
        from streams.kafka.broker import EmbeddedBroker

        def stop_on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop_on_term)  # stop the broker too, never orphan it
        broker = EmbeddedBroker(args.port)
        broker.start()
        try:
            while broker.alive():
                time.sleep(0.5)
            sys.exit(f"orderstream: broker exited with code {broker.proc.returncode}")
        except KeyboardInterrupt:
            pass
        finally:
            broker.stop()
        return

    overrides = {
        "broker": args.broker,
        "broker_port": args.broker_port,
        "http_port": args.http_port,
        "data_dir": args.data_dir,
        "partitions": args.partitions,
        "workers": args.workers,
        "sku_aliases": args.sku_aliases,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    try:
        settings = load_settings(args.config, overrides)
    except SettingsError as exc:
        print(f"orderstream: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_level, settings.log_format)  # TOML < environment < flag
    problem = _check_policies(settings)
    if problem:
        print(f"orderstream: {problem}", file=sys.stderr)
        sys.exit(2)

    malloc.limit_arenas()  # before the process starts threads (RocksDB, Kafka client, executors)
    rocks.configure(settings.rocksdb_memory_mb)
    if args.command == "serve":
        # prometheus-client picks its value store when first imported: the multiprocess
        # directory must be set before anything imports it.
        metrics_dir = settings.data_path / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        from streams.process.supervisor import serve

        serve(settings)
    else:
        from streams.process.worker import run_worker

        run_worker(settings, args.web_port, standby=args.standby)


if __name__ == "__main__":
    main()
