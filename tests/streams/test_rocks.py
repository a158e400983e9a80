"""One process's RocksDB databases share one memory budget (real RocksDB files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.process import malloc
from streams.settings import SettingsError, load_settings
from streams.state import rocks
from streams.state.store import PartitionStore

MIB = 2**20


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> int:
    """A fresh 8 MiB pool for this test (the module's pool is per process)."""
    monkeypatch.setattr(rocks, "_shared", None)
    monkeypatch.setattr(rocks, "_budget_mb", rocks.DEFAULT_MB)
    rocks.configure(8)
    return 8 * MIB


def test_memtables_of_all_stores_stay_within_the_shared_budget(
    tmp_path: Path, small_budget: int
) -> None:
    stores = [PartitionStore(tmp_path, name, p) for name in ("a", "b", "c") for p in range(4)]
    value = os.urandom(1000)
    for i in range(6000):  # 6 MB per store, 72 MB in all: far over the 8 MiB budget
        for store in stores:
            store.db.put(b"k%06d" % i, value)
    memtables = sum(s.db.property_int_value("rocksdb.cur-size-all-mem-tables") for s in stores)
    # half the budget for memtables; flushes run in the background, so allow one more buffer
    # per store in flight
    assert memtables <= small_budget // 2 + len(stores) * (small_budget // 8), memtables
    for store in stores:  # nothing written was lost to the flushes
        assert store.get(b"k000000") == value
        assert store.get(b"k005999") == value
        store.db.close()


def test_a_second_budget_after_the_first_database_opened_is_refused(
    tmp_path: Path, small_budget: int
) -> None:
    PartitionStore(tmp_path, "a", 0).db.close()
    rocks.configure(8)  # the same budget again is fine
    with pytest.raises(RuntimeError, match="after a database was opened"):
        rocks.configure(16)


def test_the_budget_setting_is_checked() -> None:
    with pytest.raises(SettingsError, match="rocksdb_memory_mb"):
        load_settings(None, {"rocksdb_memory_mb": 4})


def test_malloc_calls_are_safe_to_repeat() -> None:
    malloc.limit_arenas()
    malloc.trim()
    malloc.trim()
