"""Plumbing shared by the channel adapters.

Inside an adapter a bad value raises :class:`Bad` carrying a JSON path *relative* to where it was
found; loops and wrappers prepend their part on the way out, and :func:`run` turns it into a
``Rejection``. That keeps the happy path free of per-field string building and of
"if error: return" ladders, while the public API still never raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import msgspec

from core.model import CanonicalOrder, Rejection
from core.money import MINOR_UNITS, amount_to_minor
from core.times import SHANGHAI, iso_to_ms, local_to_ms, unix_to_ms
from ext import normalize_phone

if TYPE_CHECKING:
    from core.channels import NormaliseContext

T = TypeVar("T")

Amount = str | int | float


class Bad(Exception):
    """A payload problem at ``field`` (a JSON path, possibly still relative)."""

    __slots__ = ("field", "reason")

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def at(prefix: str, exc: Bad) -> Bad:
    """Prepend ``prefix`` to the path of ``exc`` (used by loops: ``.line_items[3]``)."""
    exc.field = prefix + exc.field
    return exc


def validation_field(message: str, root: str = "$") -> tuple[str, str]:
    """Split msgspec's "Expected `str`, got `int` - at `$.a[0].b`" into (path, reason).

    For "Object missing required field `x`" the path names the missing field itself, which is what
    the sender has to add.
    """
    reason, sep, where = message.rpartition(" - at `")
    if sep:
        path = where.rstrip("`")
    else:
        reason, path = message, root
    if reason.startswith("Object missing required field `"):
        path = f"{path}.{reason[31:].split('`', 1)[0]}"
    return path, reason


# ---------------------------------------------------------------- value helpers (raise Bad)


def currency_exp(currency: str, field: str) -> int:
    exp = MINOR_UNITS.get(currency)
    if exp is None:
        raise Bad(field, f"unknown currency {currency!r}")
    return exp


def minor(amount: Amount | None, exp: int, field: str, required: bool = False) -> int:
    """Amount -> minor units; absent optional amounts are 0 (channels omit zero fees)."""
    if amount is None or amount == "":
        if required:
            raise Bad(field, "missing amount")
        return 0
    value = amount_to_minor(amount, exp)
    if type(value) is not int:
        raise Bad(field, value.reason)  # type: ignore[union-attr]
    return value


def quantity(value: int | str, field: str) -> int:
    """Line quantity: a positive int (JD sends it as a string)."""
    if type(value) is str:
        if not (value.isdigit() and value.isascii()):
            raise Bad(field, f"quantity must be a whole number, got {value!r}")
        value = int(value)
    if value <= 0:  # type: ignore[operator]
        raise Bad(field, f"quantity must be positive, got {value!r}")
    return value  # type: ignore[return-value]


def iso_ms(text: str, field: str) -> int:
    value = iso_to_ms(text)
    if type(value) is not int:
        raise Bad(field, value.reason)  # type: ignore[union-attr]
    return value


def iso_ms_opt(text: str | None, field: str) -> int | None:
    return None if not text else iso_ms(text, field)


def shanghai_ms(text: str, field: str) -> int:
    value = local_to_ms(text, SHANGHAI)
    if type(value) is not int:
        raise Bad(field, value.reason)  # type: ignore[union-attr]
    return value


def shanghai_ms_opt(text: str | None, field: str) -> int | None:
    return None if not text else shanghai_ms(text, field)


def unix_ms(value: int | str, field: str) -> int:
    ms = unix_to_ms(value)
    if type(ms) is not int:
        raise Bad(field, ms.reason)  # type: ignore[union-attr]
    return ms


def status_of(table: dict[str, T], status: str, field: str) -> T:
    """Map a channel status through ``table``; an unknown one is rejected, never guessed."""
    mapped = table.get(status)
    if mapped is None:
        raise Bad(field, f"unknown status {status!r}")
    return mapped


def order_number(value: int | str | None, field: str) -> str:
    no = "" if value is None else (value.strip() if type(value) is str else str(value))
    if not no:
        raise Bad(field, "missing order number")
    return no


def phone_pair(raw: str | None, country: str) -> tuple[str, str]:
    """(E.164, masked) for a recipient phone.

    Masked numbers keep their visible digits in ``phone_masked``; encrypted blobs (PDD/Taobao
    "$...$", "~...~") carry nothing usable and become "" in both.
    """
    if not raw:
        return "", ""
    if "*" in raw:
        return "", raw.strip()
    if is_encrypted(raw):
        return "", ""
    return normalize_phone(raw, country), ""


def is_encrypted(value: str) -> bool:
    """PDD / Taobao ciphertext ("$...$" phones, "~...~" names and addresses): opaque to us."""
    return len(value) > 2 and value[0] in "$~" and value[-1] == value[0]


def readable(value: str | None, mask: str | None) -> str:
    """The plain value, or the platform's masked rendering when the plain one is ciphertext."""
    if value and not is_encrypted(value):
        return value
    return mask or ""


def pick_sku(ctx: NormaliseContext, field: str, *candidates: object) -> tuple[str, str]:
    """(canonical, as sent): the first non-empty candidate, merchant code before platform ids."""
    for cand in candidates:
        if cand is None:
            continue
        text = cand if type(cand) is str else str(cand)
        if text.strip():
            return ctx.skus.canonical(text), text  # type: ignore[arg-type]
    raise Bad(field, "line has no SKU (neither merchant code nor platform id)")


def join_nonempty(*parts: str | None) -> str:
    return ", ".join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------- decoding / running


def malformed(channel: str, exc: msgspec.DecodeError) -> Rejection:
    return Rejection(channel=channel, field="$", reason=f"malformed JSON: {exc}")


def run(
    channel: str,
    payload: bytes,
    ctx: NormaliseContext,
    decode: Callable[[bytes], tuple[T, str]],
    build: Callable[[T, NormaliseContext], CanonicalOrder],
    number: Callable[[T], str],
    fast_no: Callable[[bytes], str | Rejection],
) -> CanonicalOrder | Rejection:
    """Decode + build with every failure turned into a ``Rejection`` carrying the order no."""
    try:
        doc, root = decode(payload)
    except msgspec.ValidationError as exc:
        field, reason = validation_field(str(exc))
        no = fast_no(payload)
        return Rejection(
            channel=channel, field=field, reason=reason, order_no=no if type(no) is str else ""
        )
    except msgspec.DecodeError as exc:
        return malformed(channel, exc)
    except Bad as exc:
        return Rejection(channel=channel, field=exc.field, reason=exc.reason)
    try:
        return build(doc, ctx)
    except Bad as exc:
        return Rejection(
            channel=channel, field=root + exc.field, reason=exc.reason, order_no=number(doc)
        )
    except Exception as exc:  # a bug must cost one order, not the stream
        return Rejection(
            channel=channel,
            field="$",
            reason=f"internal error: {type(exc).__name__}: {exc}",
            order_no=number(doc),
        )
