"""Payload makers for integration tests: real fixture shapes with fresh order numbers."""

from __future__ import annotations

import json
from pathlib import Path

from core.channels import ADAPTERS
from core.model import global_order_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHOPIFY = json.loads((FIXTURES / "shopify" / "paid_webhook.json").read_bytes())


def shopify_order(number: int, **changes: object) -> bytes:
    """The Shopify webhook fixture with another order id (and optional field changes).

    Each number ships to its own phone: otherwise every order would be the same recipient,
    amount and items within minutes - a near-duplicate held for review.
    """
    doc = dict(SHOPIFY, id=number)
    doc["shipping_address"] = dict(SHOPIFY["shipping_address"], phone=unique_phone(number))
    doc.update(changes)
    return json.dumps(doc).encode()


def unique_phone(number: int) -> str:
    return f"+1 646 5{number % 1_000_000:06d}"


def expected_id(channel: str, payload: bytes) -> str:
    number = ADAPTERS[channel].order_no(payload)
    assert isinstance(number, str), number
    return global_order_id(channel, number)


def fixture_files() -> list[tuple[str, Path]]:
    return sorted((p.parent.name, p) for p in FIXTURES.glob("*/*.json"))
