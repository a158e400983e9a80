"""Plumbing shared by the channel adapters.

Inside an adapter a bad value raises :class:`Bad` carrying a JSON path *relative* to where it was
found; loops and wrappers prepend their part on the way out, and :func:`run` turns it into a
``Rejection``. That keeps the happy path free of per-field string building and of
"if error: return" ladders, while the public API still never raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from core.model import (
    MAX_MINOR,
    MAX_ORDER_NO_CHARS,
    MAX_QUANTITY,
    MAX_TIME_MS,
    CanonicalOrder,
    Rejection,
    limit_problem,
)
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


# The longest amount text read: MAX_MINOR has 16 digits; room for a point, decimals, zeros.
_MAX_AMOUNT_CHARS = 40


def minor(amount: Amount | None, exp: int, field: str, required: bool = False) -> int:
    """Amount -> minor units; absent optional amounts are 0 (channels omit zero fees).

    Bounded both ways before and after conversion: a 5,000-digit string or "1e999999" would
    otherwise cost seconds or raise from inside int()/Decimal, and a huge value overflows the
    64-bit ints every later stage stores.
    """
    if amount is None or amount == "":
        if required:
            raise Bad(field, "missing amount")
        return 0
    if type(amount) is str:
        if len(amount) > _MAX_AMOUNT_CHARS:  # type: ignore[arg-type]
            raise Bad(field, f"amount of {len(amount):,} characters is not a price")  # type: ignore[arg-type]
        if "e" in amount or "E" in amount:  # type: ignore[operator]
            _exponent_in_range(amount, field)  # type: ignore[arg-type]
    try:
        value = amount_to_minor(amount, exp)
    except (ValueError, ArithmeticError):  # Decimal overflow of "1e999999"
        raise Bad(field, f"amount {amount!r} is out of range") from None
    if type(value) is not int:
        raise Bad(field, value.reason)  # type: ignore[union-attr]
    if value > MAX_MINOR:
        shown = repr(amount) if type(amount) is str or value.bit_length() < 200 else "a huge number"
        raise Bad(field, f"amount {shown} is out of range (at most {MAX_MINOR} minor units)")
    return value


def _exponent_in_range(text: str, field: str) -> None:
    """int(Decimal("1e999999")) takes over a minute (and "1e9999999" overflows): refuse an
    exponent that makes the amount huge before money.py turns it into digits."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return  # not a number at all: money.py says so
    if value.is_finite() and value.adjusted() > 20:
        raise Bad(field, f"amount {text!r} is out of range (at most {MAX_MINOR} minor units)")


def quantity(value: int | str, field: str) -> int:
    """Line quantity: a positive int up to MAX_QUANTITY (JD sends it as a string)."""
    if type(value) is str:
        if not (value.isdigit() and value.isascii()) or len(value) > 12:
            raise Bad(field, f"quantity must be a whole number up to {MAX_QUANTITY}, got {value!r}")
        value = int(value)
    if value <= 0:  # type: ignore[operator]
        raise Bad(field, f"quantity must be positive, got {value!r}")
    if value > MAX_QUANTITY:  # type: ignore[operator]
        raise Bad(field, f"quantity {value} is out of range (at most {MAX_QUANTITY} per line)")
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
    if type(value) is str and len(value) > 20:  # int() of thousands of digits is slow, or raises
        raise Bad(field, f"not a unix timestamp: {len(value):,} characters")
    ms = unix_to_ms(value)
    if type(ms) is not int:
        raise Bad(field, ms.reason)  # type: ignore[union-attr]
    if ms > MAX_TIME_MS:
        raise Bad(field, f"unix timestamp {value} is past the year 9999")
    return ms


def status_of(table: dict[str, T], status: str, field: str) -> T:
    """Map a channel status through ``table``; an unknown one is rejected, never guessed."""
    mapped = table.get(status)
    if mapped is None:
        raise Bad(field, f"unknown status {status!r}")
    return mapped


# C0 and C1 control characters and DEL: never part of an identifier. They would end up in
# store keys (which use \x00 as a separator), logs and URLs.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def order_number(value: int | str | None, field: str) -> str:
    if value is None:
        no = ""
    elif type(value) is str:
        if len(value) > 4 * MAX_ORDER_NO_CHARS:  # don't strip megabytes to find out
            raise Bad(field, f"order number of {len(value):,} characters; at most 128")
        no = value.strip()
    elif type(value) is int and value.bit_length() > 4 * MAX_ORDER_NO_CHARS:
        raise Bad(field, f"order number of about {value.bit_length() * 3 // 10:,} digits")
    else:
        no = str(value)
    if not no:
        raise Bad(field, "missing order number")
    if len(no) > MAX_ORDER_NO_CHARS:
        raise Bad(field, f"order number of {len(no):,} characters; at most {MAX_ORDER_NO_CHARS}")
    if _CONTROL.search(no) is not None:
        raise Bad(field, f"order number {no!r} contains control characters")
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
    """(canonical, as sent): the first non-empty candidate, merchant code before platform ids.

    Checked before the alias lookup, which counts unknown SKUs by name: an over-long or
    control-character SKU must not reach that table (nor the stock keys, which use \x00).
    """
    for cand in candidates:
        if cand is None:
            continue
        if type(cand) is int and cand.bit_length() > 256:
            raise Bad(field, "SKU is a number of more than 77 digits")
        text = cand if type(cand) is str else str(cand)
        if text.strip():
            limit = ctx.limits.max_string_chars
            if len(text) > limit:
                raise Bad(
                    field, f"SKU of {len(text):,} characters; at most {limit:,} (max_string_chars)"
                )
            if _CONTROL.search(text) is not None:
                raise Bad(field, f"SKU {text!r} contains control characters")
            return ctx.skus.canonical(text), text  # type: ignore[arg-type]
    raise Bad(field, "line has no SKU (neither merchant code nor platform id)")


def lines_within(items: list[Any], field: str, ctx: NormaliseContext) -> None:
    """Refuse an order with more line items than ``max_order_lines`` before reading them."""
    limit = ctx.limits.max_order_lines
    if len(items) > limit:
        raise Bad(
            field, f"{len(items):,} line items; at most {limit:,} per order (max_order_lines)"
        )


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


def too_deep(channel: str) -> Rejection:
    """msgspec raises RecursionError past Python's recursion limit (~1,000 nested levels)."""
    return Rejection(
        channel=channel, field="$", reason="malformed JSON: nested too deeply (over ~1,000 levels)"
    )


def order_no_reader(
    channel: str, number_type: type[N], field: str, number_in: Callable[[N], str]
) -> Callable[[bytes], str | Rejection]:
    """A channel's ingest-side ``order_no``: decode only ``number_type`` (the few keys that lead to
    the order number, msgspec skips the rest) and let ``number_in`` read the number from it.

    ``field`` names the number when the payload does not fit ``number_type``; a :class:`Bad` from
    ``number_in`` names its own absolute path.
    """
    return _number_reader(channel, msgspec.json.Decoder(number_type).decode, field, number_in)


def enveloped_order_no_reader(
    channel: str,
    decode: Callable[[bytes], tuple[N, str]],
    field: str,
    number_at: Callable[[N, str], str],
) -> Callable[[bytes], str | Rejection]:
    """``order_no`` for a channel whose order may come inside a platform envelope.

    ``decode`` is a :func:`bare_or_wrapped_decoder` over number-only Structs built with the same
    ``unwrap`` as the normaliser's, so the door and the stream take the same order out of the same
    envelope and refuse the same error answers; ``number_at(doc, root)`` reads the number from what
    it found at ``root``. Without that the door would read no number from an envelope (400
    "missing order number"), or another one than the normaliser (a wrong global id).
    """

    def read(found: tuple[N, str]) -> str:
        return number_at(*found)

    return _number_reader(channel, decode, field, read)


def _number_reader(
    channel: str, decode: Callable[[bytes], Any], field: str, read: Callable[[Any], str]
) -> Callable[[bytes], str | Rejection]:
    """The shared body of the ``order_no`` readers: every failure becomes a ``Rejection``."""

    def order_no(payload: bytes) -> str | Rejection:
        try:
            doc = decode(payload)
        except msgspec.ValidationError as exc:
            where, reason = validation_field(str(exc), field)
            return Rejection(channel=channel, field=where, reason=reason)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return malformed(channel, exc)
        except RecursionError:
            return too_deep(channel)
        except Bad as exc:  # an envelope the platform filled with an error, or without an order
            return Rejection(channel=channel, field=exc.field, reason=exc.reason)
        except Exception as exc:  # a bug in an envelope's unwrap: refuse one payload
            return Rejection(
                channel=channel, field=field, reason=f"internal error: {type(exc).__name__}: {exc}"
            )
        try:
            return read(doc)
        except Bad as exc:
            return Rejection(channel=channel, field=exc.field, reason=exc.reason)
        except Exception as exc:  # a bug must refuse one payload, not fail the whole request
            return Rejection(
                channel=channel, field=field, reason=f"internal error: {type(exc).__name__}: {exc}"
            )

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
    wrapper_key: bytes | tuple[bytes, ...],
    unwrap: Callable[[W], tuple[Any, str] | None],
) -> Callable[[bytes], tuple[Any, str]]:
    """Decode a channel that sends the order bare (webhooks) or inside an API response.

    The wrapper is tried only when one of the ``wrapper_key`` s (quoted, as they appear in JSON:
    the response's own key, and the keys of the platform's error answer) occurs in the payload, so
    a bare order costs one ``in`` per key. ``unwrap`` returns (what the normaliser builds from, its
    JSON path), raises :class:`Bad` for an envelope that holds an error or no order (see
    :func:`platform_error`), or returns None when the key turned out not to be the wrapper's (an
    order field or a value that happens to spell it): then the payload is read as a bare order.
    """
    keys = (wrapper_key,) if type(wrapper_key) is bytes else wrapper_key
    decode_bare = msgspec.json.Decoder(order_type).decode
    decode_wrapped = msgspec.json.Decoder(wrapper_type).decode

    def decode(payload: bytes) -> tuple[Any, str]:
        for key in keys:
            if key in payload:
                found = unwrap(decode_wrapped(payload))
                if found is not None:
                    return found
                break
        return decode_bare(payload), "$"

    return decode


# ---------------------------------------------------------------- platform error answers


class TopError(msgspec.Struct):
    """The ``error_response`` a TOP-style gateway answers instead of the method's response.

    Taobao (``code`` a number, ``msg``, ``sub_code``, ``sub_msg``), JD (``code`` a string,
    ``zh_desc``, ``en_desc``) and Pinduoduo (``error_code``, ``error_msg``, ``sub_code``,
    ``sub_msg``) name the parts differently; one Struct reads all three, so a refusal quotes
    whatever the platform said.
    """

    code: int | str | None = None
    msg: str | None = None
    sub_code: int | str | None = None
    sub_msg: str | None = None
    error_code: int | str | None = None
    error_msg: str | None = None
    zh_desc: str | None = None
    en_desc: str | None = None


_SHOWN_CHARS = 200  # of a platform's code or message quoted in a reason


def shown(value: object) -> str:
    """A platform's code or message as a reason quotes it: one line, bounded (it is sender data)."""
    if type(value) is int and value.bit_length() > 64:
        return "(a number of over 19 digits)"
    text = value if type(value) is str else str(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "…"
    return _CONTROL.sub(" ", text).strip()


def platform_error(field: str, code: object, message: object = None, detail: object = None) -> Bad:
    """What to raise when the platform's error answer stands where the order should be.

    A gateway forwards a failed call unchanged; naming the error (``field`` is where it is, the
    reason quotes code, message and detail) tells the sender what went wrong upstream, where
    "missing order number" would send them looking for a bug in the order.
    """
    said = ": ".join(shown(p) for p in (code, message) if p is not None and p != "")
    if detail is not None and detail != "":
        said += f" ({shown(detail)})"
    return Bad(field, f"the platform answered an error: {said.strip() or 'no code or message'}")


def refuse_top_error(err: TopError | None, field: str = "$.error_response") -> None:
    """Raise :func:`platform_error` for a TOP-style ``error_response`` (see :class:`TopError`)."""
    if err is None:
        return
    code = err.code if err.code is not None else err.error_code
    message = err.msg or err.error_msg or err.zh_desc
    same = shown(code)  # PDD repeats its error_code as sub_code
    parts = (err.sub_code, err.sub_msg or err.en_desc)
    sub = [p for p in parts if p not in (None, "") and shown(p) != same]
    raise platform_error(field, code, message, ": ".join(shown(p) for p in sub) or None)


def normaliser(
    channel: str,
    decode: Callable[[bytes], tuple[T, str]],
    build: Callable[[T, NormaliseContext], CanonicalOrder],
    number: Callable[[T], str],
    fast_no: Callable[[bytes], str | Rejection],
) -> Callable[[bytes, NormaliseContext], CanonicalOrder | Rejection]:
    """A channel's ``normalise``: decode + build with every failure turned into a ``Rejection``
    carrying the order no (``number`` reads it from a decoded order, ``fast_no`` from bytes that
    did not decode into one). The finished order is checked against the limits
    (:func:`core.model.limit_problem`): whatever passes is safe for every later stage.
    """

    def no_of(doc: T) -> str:
        """The order number for the dead letter, if it is one the door would have accepted."""
        try:
            return order_number(number(doc), "")
        except Exception:  # Bad, or e.g. str() of a huge int: the rejection matters, not this
            return ""

    def numbered(rejection: Rejection, payload: bytes) -> Rejection:
        """With the order number the door read, if it could (invalid UTF-8 in a field the door
        skips): the client holds an id for it, and ``GET /v1/orders/{id}`` must find why."""
        no = fast_no(payload)
        return rejection if type(no) is not str else msgspec.structs.replace(rejection, order_no=no)

    def normalise(payload: bytes, ctx: NormaliseContext) -> CanonicalOrder | Rejection:
        limits = ctx.limits
        if len(payload) > limits.max_order_bytes:  # a gateway's: HTTP refuses these at the door
            reason = f"order of {len(payload):,} bytes; at most {limits.max_order_bytes:,}"
            reason += " (max_order_bytes)"
            return numbered(Rejection(channel=channel, field="$", reason=reason), payload)
        try:
            doc, root = decode(payload)
        except msgspec.ValidationError as exc:
            field, reason = validation_field(str(exc))
            no = fast_no(payload)
            return Rejection(
                channel=channel, field=field, reason=reason, order_no=no if type(no) is str else ""
            )
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return numbered(malformed(channel, exc), payload)
        except RecursionError:
            return numbered(too_deep(channel), payload)
        except Bad as exc:
            return numbered(Rejection(channel=channel, field=exc.field, reason=exc.reason), payload)
        except Exception as exc:  # a bug in an unwrap must cost one order, not the stream
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return numbered(Rejection(channel=channel, field="$", reason=reason), payload)
        try:
            order = build(doc, ctx)
        except Bad as exc:
            return Rejection(
                channel=channel, field=root + exc.field, reason=exc.reason, order_no=no_of(doc)
            )
        except Exception as exc:  # a bug must cost one order, not the stream
            return Rejection(
                channel=channel,
                field="$",
                reason=f"internal error: {type(exc).__name__}: {exc}",
                order_no=no_of(doc),
            )
        problem = limit_problem(order, limits)
        if problem is None:
            return order
        where, reason = problem
        field = source_of(doc, root, where, order, limits.max_string_chars)
        return Rejection(channel=channel, field=field, reason=reason, order_no=no_of(doc))

    return normalise


def source_of(doc: object, root: str, where: str, order: CanonicalOrder, limit: int) -> str:
    """The payload path of an over-long string the canonical check found at ``where``.

    Slow path (a rejection): walks the decoded payload for a string over ``limit`` that the
    canonical value contains. A value built from several fields (an address joined from its
    lines, a derived total) has no single source: then the canonical field is named.
    """
    value: Any = order
    try:
        for part in re.split(r"[.\[\]]+", where.strip("]")):
            value = value[int(part)] if part.isdigit() else getattr(value, part)
    except (AttributeError, IndexError, ValueError):
        value = None
    if type(value) is str:
        for path, text in _strings(doc, root):
            if len(text) > limit and text.strip() in value:
                return path
    return f"canonical {where}"


def _strings(obj: object, path: str, depth: int = 0) -> Any:
    """(JSON path, string) for every string in a decoded payload Struct, depth first."""
    if type(obj) is str:
        yield path, obj
    elif isinstance(obj, msgspec.Struct) and depth < 20:
        for name in obj.__struct_fields__:
            yield from _strings(getattr(obj, name), f"{path}.{name}", depth + 1)
    elif type(obj) is list and depth < 20:
        for i, item in enumerate(obj):
            yield from _strings(item, f"{path}[{i}]", depth + 1)
