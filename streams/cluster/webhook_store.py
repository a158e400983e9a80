"""Webhook registrations, progress and dead batches in the cluster's configuration topic.

Any node registers or deletes an endpoint; the node delivering it writes its progress (the
position in the change topics, counters) after every batch, so the node that takes it over
after a crash resumes there. Dead batches are records too, so any node lists and redelivers
them.
"""

from __future__ import annotations

import logging

import msgspec

from streams.cluster.table import CompactedTable
from streams.sync.webhooks import DeadBatch, Webhook, Webhooks, WebhookStatus, dead_key

log = logging.getLogger("orderstream.cluster")

HOOK = "webhook/"
STATUS = "webhook_status/"
DEAD = "webhook_dead/"

_enc = msgspec.json.Encoder()
_hook_dec = msgspec.json.Decoder(Webhook)
_status_dec = msgspec.json.Decoder(WebhookStatus)
_dead_dec = msgspec.json.Decoder(DeadBatch)


class ClusterHookStore:
    def __init__(self, table: CompactedTable) -> None:
        self.table = table

    def load(self) -> list[tuple[Webhook, WebhookStatus | None]]:
        values = self.table.values
        out = []
        for name, raw in sorted(values.items()):
            if not name.startswith(HOOK):
                continue
            hook = _hook_dec.decode(raw)
            status = values.get(STATUS + hook.id)
            out.append((hook, _status_dec.decode(status) if status else None))
        return out

    async def save_hook(self, hook: Webhook, status: WebhookStatus) -> None:
        await self.table.put(STATUS + hook.id, _enc.encode(status))
        await self.table.put(HOOK + hook.id, _enc.encode(hook))

    async def delete_hook(self, hook_id: str) -> None:
        await self.table.put(HOOK + hook_id, None)
        await self.table.put(STATUS + hook_id, None)
        for name in [n for n in self.table.values if n.startswith(f"{DEAD}{hook_id}/")]:
            await self.table.put(name, None)

    async def save_status(
        self, hook_id: str, status: WebhookStatus, dead: DeadBatch | None = None
    ) -> None:
        if dead is not None:
            await self.table.put(
                f"{DEAD}{hook_id}/{dead_key(dead.first_id).decode()}", _enc.encode(dead)
            )
        await self.table.put(STATUS + hook_id, _enc.encode(status))

    def dead_letters(self, hook_id: str, limit: int) -> list[DeadBatch]:
        prefix = f"{DEAD}{hook_id}/"
        names = sorted(n for n in self.table.values if n.startswith(prefix))[:limit]
        return [_dead_dec.decode(self.table.values[n]) for n in names]

    async def delete_dead(self, hook_id: str, first_id: int) -> None:
        await self.table.put(f"{DEAD}{hook_id}/{dead_key(first_id).decode()}", None)


def follow(table: CompactedTable, webhooks: Webhooks) -> None:
    """Keep this node's webhooks in step with what other nodes register, delete and deliver."""

    def changed(records: dict[str, bytes | None]) -> None:
        for name, raw in records.items():
            try:
                if name.startswith(HOOK):
                    hook_id = name[len(HOOK) :]
                    if raw is None:
                        webhooks.removed(hook_id)
                    elif hook_id not in webhooks.hooks:
                        status = table.values.get(STATUS + hook_id)
                        webhooks.added(
                            _hook_dec.decode(raw), _status_dec.decode(status) if status else None
                        )
                elif name.startswith(STATUS) and raw is not None:
                    webhooks.progressed(name[len(STATUS) :], _status_dec.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("config record %s unreadable (%s): skipped", name, exc)

    table.listeners.append(changed)
