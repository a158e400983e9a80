"""API keys, channel secrets and channel APIs kept cluster-wide in ``orderstream.config``.

One record per key id (``key/<id>``), channel secret (``channel_secret/<channel>``) and channel
API (``channel_api/<channel>``), so two nodes changing different keys at once never undo each
other. A revoked key keeps a record saying so: a node that was down during the revoke still has
the key in its local file, and must not publish it back as new.

Each node mirrors the records into the files it has always read (``auth/keys.json``,
``auth/channel_api.json``); the authenticator reloads them within a second, so a key added,
rotated or revoked on any node is in force on all within about two seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from core.credentials import ApiKey, ChannelApi, ChannelSecret, KeyFile
from streams.cluster.table import CompactedTable
from streams.http import auth

log = logging.getLogger("orderstream.cluster")

KEY = "key/"
CHANNEL_SECRET = "channel_secret/"
CHANNEL_API = "channel_api/"
CLUSTER_SECRET = "cluster/secret"
REVOKED = b'{"revoked":true}'
T = TypeVar("T")

_enc = msgspec.json.Encoder()
_key_dec = msgspec.json.Decoder(ApiKey)
_secret_dec = msgspec.json.Decoder(ChannelSecret)
_api_dec = msgspec.json.Decoder(ChannelApi)


def keyfile_from(values: dict[str, bytes]) -> KeyFile:
    keys: list[ApiKey] = []
    chan: list[ChannelSecret] = []
    for name, raw in sorted(values.items()):
        try:
            if name.startswith(KEY) and raw != REVOKED:
                keys.append(_key_dec.decode(raw))
            elif name.startswith(CHANNEL_SECRET):
                chan.append(_secret_dec.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("config record %s unreadable (%s): skipped", name, exc)
    keys.sort(key=lambda k: (k.created_at, k.id))
    return KeyFile(keys=keys, channel_secrets=chan)


def channel_apis_from(values: dict[str, bytes]) -> list[ChannelApi]:
    out = []
    for name, raw in sorted(values.items()):
        if name.startswith(CHANNEL_API):
            try:
                out.append(_api_dec.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("config record %s unreadable (%s): skipped", name, exc)
    return out


def records_of(keyfile: KeyFile, apis: list[ChannelApi]) -> dict[str, bytes]:
    out = {KEY + k.id: _enc.encode(k) for k in keyfile.keys}
    out.update({CHANNEL_SECRET + c.channel: _enc.encode(c) for c in keyfile.channel_secrets})
    out.update({CHANNEL_API + a.channel: _enc.encode(a) for a in apis})
    return out


def changes(
    before: dict[str, bytes], keyfile: KeyFile, apis: list[ChannelApi]
) -> dict[str, bytes | None]:
    """The records that turn ``before`` into this key file and channel list: what a
    ``orderstream keys`` command changed (a removed key is marked revoked, not forgotten)."""
    after = records_of(keyfile, apis)
    out: dict[str, bytes | None] = {k: v for k, v in after.items() if before.get(k) != v}
    for name, raw in before.items():
        if name in after or raw == REVOKED:
            continue
        if name.startswith(KEY):
            out[name] = REVOKED
        elif name.startswith((CHANNEL_SECRET, CHANNEL_API)):
            out[name] = None
    return out


def unpublished(values: dict[str, bytes], keyfile: KeyFile, apis: list[ChannelApi]) -> dict:
    """Entries of a node's own files the cluster has never heard of (a node's keys from before
    it joined, or its bootstrap key): published once; a revoked one stays revoked."""
    return {k: v for k, v in records_of(keyfile, apis).items() if k not in values}


class SharedConfig:
    """A node's side: mirror the cluster's credentials into its files, publish its own."""

    def __init__(self, table: CompactedTable, data_dir: Path) -> None:
        self.table = table
        self.keys_path = auth.keys_path(data_dir)
        self.apis_path = auth.channel_api_path(data_dir)

    async def join(self, fixed_secret: str) -> str:
        """Publish what only this node knows, mirror the rest; returns the cluster secret."""
        await self.publish_local()
        self.mirror()
        self.table.listeners.append(self._changed)
        if fixed_secret:
            return fixed_secret
        raw = self.table.values.get(CLUSTER_SECRET)
        if raw is None:
            await self.table.put(CLUSTER_SECRET, secrets.token_urlsafe(32).encode())
            raw = self.table.values[CLUSTER_SECRET]
        return raw.decode()

    def secret(self, fixed: str) -> str:
        raw = self.table.values.get(CLUSTER_SECRET)
        return fixed or (raw.decode() if raw else "")

    async def publish_local(self) -> None:
        local = auth.load_keys(self.keys_path)
        apis = list(auth.load_channel_apis(self.apis_path).values())
        for name, value in unpublished(self.table.values, local, apis).items():
            log.info("publishing %s to the cluster's configuration", name.split("/")[0])
            await self.table.put(name, value)

    def mirror(self) -> None:
        values = self.table.values
        keyfile = keyfile_from(values)
        if keyfile != auth.load_keys(self.keys_path):
            auth.save_keys(self.keys_path, keyfile)
        apis = channel_apis_from(values)
        if apis != list(auth.load_channel_apis(self.apis_path).values()):
            auth.save_channel_apis(self.apis_path, apis)

    def _changed(self, changed: dict[str, bytes | None]) -> None:
        if any(k.startswith((KEY, CHANNEL_SECRET, CHANNEL_API)) for k in changed):
            self.mirror()


class ConfigUnavailable(RuntimeError):
    """The cluster's configuration topic could not be read: nothing was changed."""


def edit_cluster_files(settings: Any, action: Callable[[Path, Path], T]) -> T:
    """Run a ``keys`` command against the cluster's configuration instead of local files: the
    records are written out as the files the command knows, it runs on them, and what it
    changed is published (one record per key or channel)."""
    return asyncio.run(_edit(settings, action))


async def _edit(settings: Any, action: Callable[[Path, Path], T]) -> T:
    from streams.kafka import client as kafka_client
    from streams.kafka.cluster import create_topics, wait_for_broker
    from streams.kafka.topics import CONFIG, service_topics

    kafka_client.configure(settings)
    try:
        await wait_for_broker(settings.bootstrap_servers, timeout=15)
        # only the configuration topic (as the nodes create it): never touch another topic,
        # whose partition count this command cannot know
        spec = [t for t in service_topics(settings) if t.name == CONFIG]
        await create_topics(settings.bootstrap_servers, spec)
    except (TimeoutError, OSError, RuntimeError) as exc:
        raise ConfigUnavailable(f"cannot reach {settings.broker_url}: {exc}") from None
    table = CompactedTable(settings.bootstrap_servers, CONFIG)
    table.start()
    try:
        if not await table.wait_caught_up(20):
            raise ConfigUnavailable(f"cannot read {CONFIG} from {settings.broker_url}")
        before = dict(table.values)
        with tempfile.TemporaryDirectory() as tmp:
            keys_file = auth.keys_path(Path(tmp))
            apis_file = auth.channel_api_path(Path(tmp))
            auth.save_keys(keys_file, keyfile_from(before))
            auth.save_channel_apis(apis_file, channel_apis_from(before))
            result = action(keys_file, apis_file)
            after_keys = auth.load_keys(keys_file)
            after_apis = list(auth.load_channel_apis(apis_file).values())
        for name, value in changes(before, after_keys, after_apis).items():
            await table.put(name, value)
        return result
    finally:
        await table.stop()
        from streams.ingest.forwarder import wait_closed

        await wait_closed()
