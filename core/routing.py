"""Which warehouses may serve an order, in preference order, and why.

An order that names a warehouse (``order.warehouse``) goes there and nowhere else: the channel or
the merchant decided. Otherwise the routing table decides, from ``config/warehouses.toml``:

- a zone (a set of recipient countries) gives its warehouses; a region rule inside the zone
  (province / state) puts the nearest ones first, and the zone's own list follows as fallback;
- a country in no zone gets the catch-all ``routing.default`` list, so every SKU of every order
  routes somewhere;
- a SKU class (bulky goods, bonded / cross-border goods; matched by SKU prefix or exact SKU,
  optionally only for some recipient countries) replaces the candidates for its SKUs: a sofa
  cannot ship from a parcel warehouse, an imported good sold cross-border must leave a bonded one.

The route is a list, not one warehouse: the SKU partition grants from the first candidate that
has the stock and falls back to the next, so "nearest with stock" needs no extra round trip.
The ``why`` text is stored on the order (``ReservationSaga.routed_by``) for operators.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from core.model import CanonicalOrder

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "warehouses.toml"

# Chinese provinces are written "浙江省", "浙江", "上海市", "广西壮族自治区": compare the stem.
_REGION_SUFFIXES = (
    "壮族自治区",
    "回族自治区",
    "维吾尔自治区",
    "特别行政区",
    "自治区",
    "省",
    "市",
)


def region_key(region: str) -> str:
    """The comparable form of a region name: trimmed, casefolded, Chinese suffix dropped."""
    text = region.strip().casefold()
    for suffix in _REGION_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


class RoutingConfigError(ValueError):
    """A broken routing table: ``key`` names the TOML key, ``reason`` says what is wrong."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.key = key
        self.reason = reason


class Zone(msgspec.Struct, frozen=True):
    name: str
    countries: frozenset[str]
    warehouses: list[str]
    regions: dict[str, list[str]]  # region_key -> warehouses
    region_names: dict[str, str]  # region_key -> name as written in the table


class SkuClass(msgspec.Struct, frozen=True):
    name: str
    skus: frozenset[str]
    sku_prefixes: tuple[str, ...]
    countries: frozenset[str]  # empty = every country
    warehouses: list[str]

    def matches(self, sku: str, country: str) -> bool:
        if self.countries and country not in self.countries:
            return False
        return sku in self.skus or sku.startswith(self.sku_prefixes)


class Route(msgspec.Struct, frozen=True):
    """Candidates for the order, per-SKU overrides from SKU classes, and the reason."""

    warehouses: list[str]
    by_sku: dict[str, list[str]]
    why: str

    def for_sku(self, sku: str) -> list[str]:
        return self.by_sku.get(sku, self.warehouses)


def _dedup(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(w for lst in lists for w in lst))


class WarehouseRouting:
    """The routing table, validated once at start-up."""

    def __init__(
        self,
        warehouses: dict[str, str],
        default: list[str],
        zones: list[Zone],
        classes: list[SkuClass],
    ) -> None:
        self.warehouses = warehouses
        self.default_warehouses = default
        self.zones = zones
        self.classes = classes
        self._zone_of = {c: z for z in zones for c in z.countries}
        # The table is fixed after loading, so a route depends only on (country, region) and a
        # SKU's class only on (sku, country): cached, as a flood repeats both endlessly.
        self._base: dict[tuple[str, str], tuple[list[str], str]] = {}
        self._class_of: dict[tuple[str, str], SkuClass | None] = {}

    @classmethod
    def default(cls) -> WarehouseRouting:
        return cls.from_toml(DEFAULT_CONFIG)

    @classmethod
    def from_toml(cls, path: str | Path) -> WarehouseRouting:
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise RoutingConfigError(str(path), "(file)", f"not valid TOML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "routing") -> WarehouseRouting:
        """Build from parsed TOML; every error names the key (``zones[1].regions.浙江``)."""

        def fail(key: str, reason: str) -> RoutingConfigError:
            return RoutingConfigError(source, key, reason)

        unknown = set(data) - {"warehouses", "routing", "zones", "sku_classes"}
        if unknown:
            raise fail(sorted(unknown)[0], "unknown key")
        known = data.get("warehouses")
        if not isinstance(known, dict) or not known:
            raise fail("warehouses", "must be a table of warehouse id = description")
        for wid, desc in known.items():
            if not wid.strip() or not isinstance(desc, str):
                raise fail(f"warehouses.{wid}", "must map a non-empty id to a description")

        def wh_list(key: str, value: Any) -> list[str]:
            if not isinstance(value, list) or not value:
                raise fail(key, "must be a non-empty list of warehouse ids")
            for w in value:
                if not isinstance(w, str) or w not in known:
                    raise fail(key, f"{w!r} is not declared under [warehouses]")
            if len(set(value)) != len(value):
                raise fail(key, "lists a warehouse twice")
            return list(value)

        def str_list(key: str, value: Any) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise fail(key, "must be a list of non-empty strings")
            return list(value)

        routing = data.get("routing")
        if not isinstance(routing, dict):
            raise fail("routing", "missing: [routing] with default = [...] (the catch-all)")
        for k in set(routing) - {"default"}:
            raise fail(f"routing.{k}", "unknown key")
        default = wh_list("routing.default", routing.get("default"))

        zones: list[Zone] = []
        seen_countries: dict[str, str] = {}
        raw_zones = data.get("zones", [])
        if not isinstance(raw_zones, list):
            raise fail("zones", "must be an array of tables ([[zones]])")
        for i, z in enumerate(raw_zones):
            at = f"zones[{i}]"
            if not isinstance(z, dict):
                raise fail(at, "must be a table")
            for k in set(z) - {"name", "countries", "warehouses", "regions"}:
                raise fail(f"{at}.{k}", "unknown key")
            name = z.get("name")
            if not isinstance(name, str) or not name:
                raise fail(f"{at}.name", "must be a non-empty string")
            countries = str_list(f"{at}.countries", z.get("countries"))
            if not countries:
                raise fail(f"{at}.countries", "must name at least one country")
            for c in countries:
                if len(c) != 2 or not c.isalpha() or not c.isupper():
                    raise fail(f"{at}.countries", f"{c!r} is not an ISO 3166-1 alpha-2 code")
                if c in seen_countries:
                    raise fail(f"{at}.countries", f"{c} is already in zone {seen_countries[c]}")
                seen_countries[c] = name
            whs = wh_list(f"{at}.warehouses", z.get("warehouses"))
            raw_regions = z.get("regions", {})
            if not isinstance(raw_regions, dict):
                raise fail(f"{at}.regions", "must be a table of region = [warehouses]")
            regions: dict[str, list[str]] = {}
            names: dict[str, str] = {}
            for region, lst in raw_regions.items():
                rk = region_key(region)
                if rk in regions:
                    raise fail(f"{at}.regions.{region}", f"same region as {names[rk]!r}")
                regions[rk] = wh_list(f"{at}.regions.{region}", lst)
                names[rk] = region
            zones.append(Zone(name, frozenset(countries), whs, regions, names))

        classes: list[SkuClass] = []
        raw_classes = data.get("sku_classes", [])
        if not isinstance(raw_classes, list):
            raise fail("sku_classes", "must be an array of tables ([[sku_classes]])")
        class_names: set[str] = set()
        for i, c in enumerate(raw_classes):
            at = f"sku_classes[{i}]"
            if not isinstance(c, dict):
                raise fail(at, "must be a table")
            for k in set(c) - {"name", "skus", "sku_prefixes", "countries", "warehouses"}:
                raise fail(f"{at}.{k}", "unknown key")
            name = c.get("name")
            if not isinstance(name, str) or not name:
                raise fail(f"{at}.name", "must be a non-empty string")
            if name in class_names:
                raise fail(f"{at}.name", f"class {name!r} is defined twice")
            class_names.add(name)
            skus = str_list(f"{at}.skus", c.get("skus", []))
            prefixes = str_list(f"{at}.sku_prefixes", c.get("sku_prefixes", []))
            if not skus and not prefixes:
                raise fail(at, "matches no SKU: give skus or sku_prefixes")
            countries = str_list(f"{at}.countries", c.get("countries", []))
            whs = wh_list(f"{at}.warehouses", c.get("warehouses"))
            classes.append(
                SkuClass(name, frozenset(skus), tuple(prefixes), frozenset(countries), whs)
            )
        return cls(dict(known), default, zones, classes)

    def sku_class(self, sku: str, country: str) -> SkuClass | None:
        """The first class (in table order) that claims ``sku`` for ``country``."""
        for cls_ in self.classes:
            if cls_.matches(sku, country):
                return cls_
        return None

    def route(self, order: CanonicalOrder) -> Route:
        if order.warehouse:
            return Route([order.warehouse], {}, f"{order.warehouse} named by the order")
        country = order.recipient.country.strip().upper()
        region = order.recipient.region
        base_why = self._base.get((country, region))
        if base_why is None:
            if len(self._base) > 100_000:
                self._base.clear()
            base_why = self._base[(country, region)] = self._base_route(country, region)
        base, why = base_why
        by_sku: dict[str, list[str]] = {}
        notes: list[str] = []
        for line in order.lines:
            if line.sku in by_sku:
                continue
            key = (line.sku, country)
            try:
                cls_ = self._class_of[key]
            except KeyError:
                if len(self._class_of) > 100_000:
                    self._class_of.clear()
                cls_ = self._class_of[key] = self.sku_class(line.sku, country)
            if cls_ is not None:
                by_sku[line.sku] = cls_.warehouses
                notes.append(f"SKU {line.sku} class {cls_.name} -> [{', '.join(cls_.warehouses)}]")
        if notes:
            why = "; ".join([why, *notes])
        return Route(list(base), by_sku, why)

    def _base_route(self, country: str, region: str) -> tuple[list[str], str]:
        zone = self._zone_of.get(country)
        if zone is None:
            base = self.default_warehouses
            why = f"{country or '(no country)'} -> [{', '.join(base)}] by catch-all default"
        else:
            rk = region_key(region)
            first = zone.regions.get(rk)
            if first is not None:
                base = _dedup(first, zone.warehouses)
                why = (
                    f"{country}/{region} -> [{', '.join(base)}] by region rule "
                    f"{zone.region_names[rk]} of zone {zone.name}"
                )
            else:
                base = zone.warehouses
                where = f"{country}/{region}" if region else country
                why = f"{where} -> [{', '.join(base)}] by zone {zone.name}"
        return base, why
