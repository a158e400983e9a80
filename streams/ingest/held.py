"""Which of a batch of order ids orderstream already holds, asked of the workers that own them.

File imports and reconciliations report what they brought (missing, known, newer, different),
so before admitting a batch they ask every worker; each answers for the ids on partitions it
owns. An id nobody owned (a rebalance in progress) is asked again a few times, then reported as
unchecked rather than guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec

from core.reconcile import HeldSummary

AskWorkers = Callable[[str, bytes], Awaitable[list[tuple[int, bytes]]]]
OWNER_RETRIES = 5  # 1 s apart


class _Known(msgspec.Struct):
    owned: list[str] = []
    held: dict[str, HeldSummary] = {}


_decode = msgspec.json.Decoder(_Known).decode
_encode = msgspec.json.Encoder().encode


async def held_orders(
    ask_workers: AskWorkers, ids: list[str], retries: int = OWNER_RETRIES
) -> tuple[dict[str, HeldSummary], set[str]]:
    """Summaries of the ids some worker holds, and the ids no worker owned."""
    held: dict[str, HeldSummary] = {}
    left = ids
    for attempt in range(retries):
        owned: set[str] = set()
        for status, body in await ask_workers("/internal/orders-known", _encode(left)):
            if status == 200:
                answer = _decode(body)
                owned.update(answer.owned)
                held.update(answer.held)
        left = [i for i in left if i not in owned]
        if not left:
            break
        if attempt < retries - 1:
            await asyncio.sleep(1.0)
    return held, set(left)
