"""The alias table maps every spelling to one canonical SKU and surfaces the unknown ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.skus import SkuCatalog

CONFIG = Path(__file__).resolve().parents[2] / "config" / "skus.toml"


@pytest.fixture
def catalog() -> SkuCatalog:
    return SkuCatalog.from_toml(CONFIG)


@pytest.mark.parametrize(
    "text",
    [
        "MB-C200",
        "Mercedes-Benz C200",
        "mb c200",
        "奔驰C200",
        "ＭＢ－Ｃ２００",
        " mb_c200 ",
        "MB.C200",
    ],
)
def test_mercedes_spellings(catalog: SkuCatalog, text: str) -> None:
    assert catalog.canonical(text) == "MB-C200"
    assert catalog.unknown_total == 0


def test_hoodie_aliases(catalog: SkuCatalog) -> None:
    assert catalog.canonical("HD-001-BK-M") == "HOODIE-BLK-M"
    assert catalog.canonical("连帽卫衣 黑色 L码") == "HOODIE-BLK-L"
    assert catalog.canonical("Classic Hoodie / Black / M") == "HOODIE-BLK-M"


def test_unknown_passes_through_stripped_and_is_counted(catalog: SkuCatalog) -> None:
    assert catalog.canonical("  NEW-THING-01 ") == "NEW-THING-01"
    assert catalog.canonical("NEW-THING-01") == "NEW-THING-01"
    assert catalog.canonical("OTHER") == "OTHER"
    assert catalog.unknown["NEW-THING-01"] == 2
    assert catalog.unknown_total == 3


def test_repeated_lookups_hit_the_cache(catalog: SkuCatalog) -> None:
    for _ in range(3):
        assert catalog.canonical("Mercedes-Benz C200") == "MB-C200"


def test_conflicting_alias_refuses_to_load() -> None:
    with pytest.raises(ValueError, match="maps to both"):
        SkuCatalog({"A-1": ["shared"], "B-2": ["Shared"]})


def test_alias_without_letters_refuses_to_load() -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        SkuCatalog({"A-1": ["--"]})


def test_from_toml_rejects_bad_shape(tmp_path: Path) -> None:
    bad = tmp_path / "skus.toml"
    bad.write_text('[skus."A-1"]\naliases = "not a list"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="must be a list"):
        SkuCatalog.from_toml(bad)


def test_example_config_loads(catalog: SkuCatalog) -> None:
    assert len(catalog) >= 10
