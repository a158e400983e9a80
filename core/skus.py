"""Channel SKU text -> the merchant's canonical SKU, through an operator-maintained alias table.

Every channel spells the same product differently ("MB-C200", "Mercedes-Benz C200", "奔驰C200").
Lookups go through ``ext.sku_key`` (NFKC, casefold, punctuation and spaces dropped) so cosmetic
differences never need their own alias. Unknown SKUs are not errors (new products appear before
operators alias them): they pass through stripped and are counted so operators can see which
aliases to add.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from ext import sku_key

# Bounds on per-process memory: both maps are keyed by sender-controlled text.
_CACHE_MAX = 65_536
_UNKNOWN_MAX = 10_000


class SkuCatalog:
    """Alias table plus a counter of SKUs nobody has aliased yet."""

    __slots__ = ("_cache", "_index", "unknown", "unknown_total")

    def __init__(self, aliases: Mapping[str, Iterable[str]] | None = None) -> None:
        self._index: dict[str, str] = {}
        self._cache: dict[str, str] = {}
        # Distinct unknown SKUs -> occurrences (bounded); ``unknown_total`` counts every miss.
        self.unknown: Counter[str] = Counter()
        self.unknown_total = 0
        for canonical, names in (aliases or {}).items():
            self._add(canonical, canonical)
            for name in names:
                self._add(name, canonical)

    def _add(self, name: str, canonical: str) -> None:
        key = sku_key(name)
        if not key:
            raise ValueError(f"alias {name!r} of {canonical!r} has no letters or digits")
        owner = self._index.setdefault(key, canonical)
        if owner != canonical:
            # Two canonical SKUs claiming one spelling would route stock at random: refuse to load.
            raise ValueError(f"alias {name!r} maps to both {owner!r} and {canonical!r}")

    @classmethod
    def from_toml(cls, path: str | Path) -> SkuCatalog:
        """Load ``[skus."MB-C200"] aliases = [...]``; a broken file fails loudly at startup."""
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        table = data.get("skus", {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [skus] must be a table")
        aliases: dict[str, list[str]] = {}
        for canonical, entry in table.items():
            names = entry.get("aliases", []) if isinstance(entry, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{path}: skus.{canonical}.aliases must be a list of strings")
            aliases[canonical] = names
        return cls(aliases)

    def __len__(self) -> int:
        return len(self._index)

    def canonical(self, channel_sku: str) -> str:
        """Canonical SKU for ``channel_sku``; unknown ones come back stripped and are counted."""
        hit = self._cache.get(channel_sku)
        if hit is not None:
            return hit
        found = self._index.get(sku_key(channel_sku))
        if found is not None:
            if len(self._cache) < _CACHE_MAX:
                self._cache[channel_sku] = found
            return found
        stripped = channel_sku.strip()
        self.unknown_total += 1
        if stripped in self.unknown or len(self.unknown) < _UNKNOWN_MAX:
            self.unknown[stripped] += 1
        return stripped
