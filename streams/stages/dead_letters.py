"""Dead-letter stage: makes ``orders.dlq`` durable and queryable, and settles the journal.

With the embedded broker a topic dies with the broker, so the dead letters that operators must
be able to inspect live in a partition store: by order id when the payload named one (so
``GET /v1/orders/{id}`` can say why an accepted order never became an order), else by time.
"""

from __future__ import annotations

import msgspec

from core.model import global_order_id
from streams.kafka.envelope import DeadLetter, Settle, settles_for

STORE = "dead_letters"
BY_ID = b"id:"
BY_TIME = b"t:"

letter_encoder = msgspec.msgpack.Encoder()
letter_decoder = msgspec.msgpack.Decoder(DeadLetter)


def letter_keys(letter: DeadLetter, offset: int, index: int) -> list[bytes]:
    """Time-ordered key plus, when known, the order-id key.

    A journaled letter is identified by its journal entry, so a replay overwrites it rather
    than storing it twice; a gateway's letter by its input position.
    """
    if letter.origin is not None:
        unique = letter.origin.journal.encode() + letter.origin.seq.to_bytes(8, "big")
    else:
        unique = offset.to_bytes(8, "big") + index.to_bytes(4, "big")
    keys = [BY_TIME + letter.received_at.to_bytes(8, "big") + unique]
    if letter.order_no and letter.channel:
        keys.append(BY_ID + global_order_id(letter.channel, letter.order_no).encode())
    return keys


def store_letters(
    letters: list[DeadLetter], offset: int
) -> tuple[dict[bytes, bytes], list[Settle]]:
    updates: dict[bytes, bytes] = {}
    for i, letter in enumerate(letters):
        value = letter_encoder.encode(letter)
        for key in letter_keys(letter, offset, i):
            updates[key] = value
    return updates, settles_for(letter.origin for letter in letters)
