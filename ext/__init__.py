"""Hot-path kernels: the compiled Cython build when it is there, the pure-Python twin otherwise.

Callers import from here and never learn which one runs; both return identical results (the
tests check that on arbitrary input). Set ``ORDERSTREAM_PURE_PYTHON=1`` to force the twin, e.g.
to compare behaviour or to debug with a Python stack.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from ext import _twin

__all__ = [
    "COMPILED",
    "IMPLEMENTATION",
    "fold_text",
    "kafka_partition",
    "kafka_partitions",
    "masked_digits_agree",
    "normalize_phone",
    "recipient_fingerprint",
    "sku_key",
    "sku_multiset_fingerprint",
    "wildcard_match",
]

_log = logging.getLogger("orderstream.ext")
_API = (
    "kafka_partition",
    "fold_text",
    "kafka_partitions",
    "masked_digits_agree",
    "normalize_phone",
    "recipient_fingerprint",
    "sku_key",
    "sku_multiset_fingerprint",
    "wildcard_match",
)


def _select() -> ModuleType:
    if os.environ.get("ORDERSTREAM_PURE_PYTHON", "").strip() not in ("", "0"):
        _log.info("ORDERSTREAM_PURE_PYTHON is set; using the pure-Python twin kernels")
        return _twin
    try:
        _kernels = importlib.import_module("ext._kernels")
    except ImportError as exc:
        _log.warning(
            "Cython kernels not built; using the pure-Python twin (pip install -e . builds them)"
            " [%s]",
            exc,
        )
        return _twin
    if getattr(_kernels, "KERNEL_API", None) != _twin.KERNEL_API or not all(
        hasattr(_kernels, name) for name in _API
    ):
        _log.warning(
            "Cython kernels are stale (built from an older ext/_kernels.pyx); using the"
            " pure-Python twin (pip install -e . rebuilds them)"
        )
        return _twin
    _log.info("using the compiled Cython kernels")
    return _kernels


_impl = _select()

COMPILED: bool = _impl is not _twin
IMPLEMENTATION: str = "cython" if COMPILED else "python"

kafka_partition = _impl.kafka_partition
kafka_partitions = _impl.kafka_partitions
fold_text = _impl.fold_text
masked_digits_agree = _impl.masked_digits_agree
wildcard_match = _impl.wildcard_match
normalize_phone = _impl.normalize_phone
recipient_fingerprint = _impl.recipient_fingerprint
sku_key = _impl.sku_key
sku_multiset_fingerprint = _impl.sku_multiset_fingerprint
