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
W = TypeVar("W")  # a wrapper Struct
N = TypeVar("N")  # a Struct holding only the order number

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


def required(value: T | None, field: str, what: str) -> T:
    """An object the channel must send (a wrapper's order, Amazon's ``order``), or Bad."""
    if value is None:
        raise Bad(field, f"missing {what} object")
    return value


def malformed(channel: str, exc: msgspec.DecodeError | UnicodeDecodeError) -> Rejection:
    """msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string."""
    if isinstance(exc, UnicodeDecodeError):
        return Rejection(
            channel=channel,
            field="$",
            reason=f"malformed JSON: invalid UTF-8 at byte {exc.start} of a string ({exc.reason})",
        )
    return Rejection(channel=channel, field="$", reason=f"malformed JSON: {exc}")


def order_no_reader(
    channel: str, number_type: type[N], field: str, number_in: Callable[[N], str]
) -> Callable[[bytes], str | Rejection]:
    """A channel's ingest-side ``order_no``: decode only ``number_type`` (the few keys that lead to
    the order number, msgspec skips the rest) and let ``number_in`` read the number from it.

    ``field`` names the number when the payload does not fit ``number_type``; a :class:`Bad` from
    ``number_in`` names its own absolute path.
    """
    decode = msgspec.json.Decoder(number_type).decode

    def order_no(payload: bytes) -> str | Rejection:
        try:
            doc = decode(payload)
        except msgspec.ValidationError as exc:
            return Rejection(channel=channel, field=field, reason=str(exc))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return malformed(channel, exc)
        try:
            return number_in(doc)
        except Bad as exc:
            return Rejection(channel=channel, field=exc.field, reason=exc.reason)

    return order_no


def bare_decoder(order_type: type[T]) -> Callable[[bytes], tuple[T, str]]:
    """Decode a channel that always sends the order itself, at the JSON root."""
    decode = msgspec.json.Decoder(order_type).decode

    def decode_bare(payload: bytes) -> tuple[T, str]:
        return decode(payload), "$"

    return decode_bare


def bare_or_wrapped_decoder(
    order_type: type[T],
    wrapper_type: type[W],
    wrapper_key: bytes,
    unwrap: Callable[[W], tuple[T, str] | None],
) -> Callable[[bytes], tuple[T, str]]:
    """Decode a channel that sends the order bare (webhooks) or inside an API response.

    The wrapper is tried only when ``wrapper_key`` (quoted, as it appears in JSON) occurs in the
    payload; ``unwrap`` returns (order, its JSON path), or None when the key turned out not to be
    the wrapper's (an order field or a value that happens to spell it).
    """
    decode_bare = msgspec.json.Decoder(order_type).decode
    decode_wrapped = msgspec.json.Decoder(wrapper_type).decode

    def decode(payload: bytes) -> tuple[T, str]:
        if wrapper_key in payload:
            found = unwrap(decode_wrapped(payload))
            if found is not None:
                return found
        return decode_bare(payload), "$"

    return decode


def normaliser(
    channel: str,
    decode: Callable[[bytes], tuple[T, str]],
    build: Callable[[T, NormaliseContext], CanonicalOrder],
    number: Callable[[T], str],
    fast_no: Callable[[bytes], str | Rejection],
) -> Callable[[bytes, NormaliseContext], CanonicalOrder | Rejection]:
    """A channel's ``normalise``: decode + build with every failure turned into a ``Rejection``
    carrying the order no (``number`` reads it from a decoded order, ``fast_no`` from bytes that
    did not decode into one).
    """

    def normalise(payload: bytes, ctx: NormaliseContext) -> CanonicalOrder | Rejection:
        try:
            doc, root = decode(payload)
        except msgspec.ValidationError as exc:
            field, reason = validation_field(str(exc))
            no = fast_no(payload)
            return Rejection(
                channel=channel, field=field, reason=reason, order_no=no if type(no) is str else ""
            )
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
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

    return normalise
